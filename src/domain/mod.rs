//! Domain newtypes: request bodies are parsed into these at the edge, so past
//! the handler invalid data cannot exist.

pub mod email;
pub mod money;
pub mod order_status;
pub mod password;
pub mod quantity;
pub mod role;
pub mod text;
pub mod user_name;

pub use email::Email;
pub use money::Money;
pub use order_status::OrderStatus;
pub use password::Password;
pub use quantity::{Quantity, StockDelta};
pub use role::Role;
pub use user_name::UserName;
