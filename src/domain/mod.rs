//! Domain newtypes: request bodies are parsed into these at the edge, so past
//! the handler invalid data cannot exist.

pub mod email;
pub mod password;
pub mod role;
pub mod user_name;

pub use email::Email;
pub use password::Password;
pub use role::Role;
pub use user_name::UserName;
