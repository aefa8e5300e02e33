//! Maps keyed by a number (a CPU, an IRQ). JSON writes their keys as strings; reading them back
//! through a tagged enum sees strings, so the keys are parsed here.
use std::{collections::BTreeMap, str::FromStr};

use serde::{Deserialize, Deserializer, de::Error as _};

/// `#[serde(deserialize_with = "numbered::keys")]` for a `BTreeMap<K, V>` with numeric `K`.
pub fn keys<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: FromStr + Ord,
    V: Deserialize<'de>,
{
    BTreeMap::<String, V>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| match k.parse() {
            Ok(n) => Ok((n, v)),
            Err(_) => Err(D::Error::custom(format!("'{k}' is not a number"))),
        })
        .collect()
}
