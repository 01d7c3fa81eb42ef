//! Server-made object keys: an area (where the object is in its life) and a UUID.
//! Nothing a client sends ever becomes part of a key.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Where an object is in its life: uploaded but unchecked, accepted, or set aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Area {
    Staging,
    Stored,
    Quarantine,
}

impl Area {
    pub const ALL: [Area; 3] = [Area::Staging, Area::Stored, Area::Quarantine];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Staging => "staging",
            Area::Stored => "stored",
            Area::Quarantine => "quarantine",
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key of one object: `<area>/<uuid>`, e.g. `stored/0191c1b6-…`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    area: Area,
    id: Uuid,
}

impl ObjectKey {
    pub fn new(area: Area, id: Uuid) -> ObjectKey {
        ObjectKey { area, id }
    }

    pub fn area(&self) -> Area {
        self.area
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The same object's key in another area (staging → stored, …).
    pub fn in_area(&self, area: Area) -> ObjectKey {
        ObjectKey { area, id: self.id }
    }

    /// The key as the store sees it: `stored/<uuid>` (hyphenated, lowercase).
    pub fn as_path(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.area.as_str(), self.id.hyphenated())
    }
}

/// A string that is not `<area>/<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an object key: expected <staging|stored|quarantine>/<uuid>")]
pub struct InvalidObjectKey;

impl FromStr for ObjectKey {
    type Err = InvalidObjectKey;

    /// Parses exactly what [`ObjectKey::as_path`] writes (for keys kept in the database).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (area, id) = s.split_once('/').ok_or(InvalidObjectKey)?;
        let area = Area::ALL
            .into_iter()
            .find(|a| a.as_str() == area)
            .ok_or(InvalidObjectKey)?;
        let id = Uuid::try_parse(id).map_err(|_| InvalidObjectKey)?;
        let key = ObjectKey { area, id };
        // Only the canonical spelling, so one object has one key string.
        (key.as_path() == s).then_some(key).ok_or(InvalidObjectKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_its_area_and_hyphenated_id() {
        let id = Uuid::from_u128(0x0191_c1b6_7c3a_7d2e_8f00_0000_0000_0001);
        let key = ObjectKey::new(Area::Stored, id);
        assert_eq!(key.as_path(), "stored/0191c1b6-7c3a-7d2e-8f00-000000000001");
        assert_eq!(key.to_string(), key.as_path());
        assert_eq!(
            key.in_area(Area::Quarantine).as_path(),
            "quarantine/0191c1b6-7c3a-7d2e-8f00-000000000001"
        );
    }

    #[test]
    fn only_canonical_keys_parse() {
        let key = ObjectKey::new(Area::Staging, Uuid::new_v4());
        assert_eq!(key.as_path().parse::<ObjectKey>(), Ok(key.clone()));
        let upper = key.as_path().to_uppercase().replace("STAGING", "staging");
        for bad in [
            "",
            "staging",
            "tmp/0191c1b6-7c3a-7d2e-8f00-000000000001",
            "stored/../0191c1b6-7c3a-7d2e-8f00-000000000001",
            "stored/0191c1b67c3a7d2e8f00000000000001",
            upper.as_str(),
        ] {
            assert_eq!(bad.parse::<ObjectKey>(), Err(InvalidObjectKey), "{bad:?}");
        }
    }
}
