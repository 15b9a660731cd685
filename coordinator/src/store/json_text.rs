//! JSON parameters serialized up front into one buffer. A batch carries hundreds
//! of small fields; serde_json writes them into a `Vec` several times faster than
//! through the `BufMut` adaptor that `tokio_postgres::types::Json` serializes into.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// A `json`/`jsonb` parameter, as text.
#[derive(Debug)]
pub struct JsonText(Vec<u8>);

impl JsonText {
    pub fn of<T: Serialize + ?Sized>(value: &T) -> super::Result<JsonText> {
        serde_json::to_vec(value)
            .map(JsonText)
            .map_err(|e| super::Error::Corrupt(format!("a parameter is not JSON: {e}")))
    }
}

impl ToSql for JsonText {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // The binary jsonb format: a version byte, then the text.
            out.put_u8(1);
        }
        out.put_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonb_text_follows_its_version_byte() {
        let mut out = BytesMut::new();
        let param = JsonText::of(&serde_json::json!({"a": [1, "b"]})).unwrap();
        param.to_sql(&Type::JSONB, &mut out).unwrap();
        assert_eq!(&out[..], b"\x01{\"a\":[1,\"b\"]}");
        out.clear();
        param.to_sql(&Type::JSON, &mut out).unwrap();
        assert_eq!(&out[..], b"{\"a\":[1,\"b\"]}");
        assert!(!<JsonText as ToSql>::accepts(&Type::TEXT));
    }
}
