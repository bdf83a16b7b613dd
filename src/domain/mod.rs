//! Domain newtypes: request bodies are parsed into these at the edge, so past
//! the handler invalid data cannot exist.

/// Stores an enum with `as_str` / `FromStr` in a text column: the row types
/// carry the enum, never the string.
macro_rules! text_column {
    ($t:ty) => {
        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $t {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    self.as_str(),
                    &mut out.reborrow(),
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $t {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let s = <String as diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg>>::from_sql(
                    bytes,
                )?;
                s.parse::<Self>().map_err(|e| format!("{s:?}: {e}").into())
            }
        }
    };
}

pub mod email;
pub mod event_type;
pub mod money;
pub mod order_status;
pub mod password;
pub mod quantity;
pub mod reservation_status;
pub mod role;
pub mod text;
pub mod user_name;

pub use email::Email;
pub use event_type::{EventType, EventTypes};
pub use money::Money;
pub use order_status::OrderStatus;
pub use password::Password;
pub use quantity::{Quantity, StockDelta};
pub use reservation_status::ReservationStatus;
pub use role::Role;
pub use user_name::UserName;
