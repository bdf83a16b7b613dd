//! Supervised actors that own the state-changing work and their own pools.

pub mod user;
