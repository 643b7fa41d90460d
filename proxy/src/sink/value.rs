//! Column values as they came off the wire, passed to the follower untouched.

use bytes::{Bytes, BytesMut};
use pgsieve_protocol::pgoutput::{Column, TupleData};
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

impl WireValue {
    /// The value's text form (`Ok(None)` for NULL), or `Err(())` when it is
    /// in binary form.
    #[allow(clippy::result_unit_err)]
    pub fn text_bytes(&self) -> Result<Option<&[u8]>, ()> {
        match (&self.data, self.binary) {
            (None, _) => Ok(None),
            (Some(data), false) => Ok(Some(data)),
            (Some(_), true) => Err(()),
        }
    }

    /// One column of a received tuple as a parameter: a slice of the frame it
    /// arrived in (a reference count, no copy, no allocation). An
    /// unchanged-TOAST column has no value here; callers leave it out.
    pub fn from_column(tuple: &TupleData, column: Column<'_>) -> WireValue {
        match column {
            Column::Null | Column::UnchangedToast => WireValue::NULL,
            Column::Text(b) => WireValue::text(tuple.encoded_columns().slice_ref(b)),
            Column::Binary(b) => WireValue::binary(tuple.encoded_columns().slice_ref(b)),
        }
    }
}

/// Appends every column of `tuple` to `params` (one multi-row INSERT's
/// parameters, row after row). Allocates only when `params` must grow: a
/// batch reserves its room once, so a row costs no allocation.
pub fn encode_row(tuple: &TupleData, params: &mut Vec<WireValue>) {
    params.extend(
        tuple
            .columns()
            .map(|column| WireValue::from_column(tuple, column)),
    );
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
