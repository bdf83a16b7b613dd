//! Supervised actors that own the state-changing work and their own pools.

pub mod cache;
pub mod catalog;
pub mod events;
pub mod inventory;
pub mod order;
pub mod user;
