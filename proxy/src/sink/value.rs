//! Column values as they came off the wire, passed to the follower untouched.

use bytes::{Bytes, BytesMut};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

/// A parameter carrying pgoutput's own encoding of a value: text (the
/// type's output function) or binary (its send function). The follower
/// parses it with the input/receive function of its own column type, the way
/// PostgreSQL's apply worker does, so no conversion happens in pgsieve.
#[derive(Debug, Clone)]
pub struct WireValue {
    data: Option<Bytes>,
    binary: bool,
}

impl WireValue {
    /// SQL NULL.
    pub const NULL: WireValue = WireValue {
        data: None,
        binary: false,
    };

    /// A value in text form.
    pub fn text(data: Bytes) -> Self {
        Self {
            data: Some(data),
            binary: false,
        }
    }

    /// A value in binary (send-function) form.
    pub fn binary(data: Bytes) -> Self {
        Self {
            data: Some(data),
            binary: true,
        }
    }
}

impl ToSql for WireValue {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.data {
            None => Ok(IsNull::Yes),
            Some(data) => {
                out.extend_from_slice(data);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        if self.binary {
            Format::Binary
        } else {
            Format::Text
        }
    }

    to_sql_checked!();
}
