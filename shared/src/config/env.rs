//! Reading typed values from a variable source, each error naming its variable.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{SecretBox, SecretString};

use super::{AppEnv, ConfigError, Key256, QueueSettings, RetiredKey};

pub(crate) struct Env<'a, F: Fn(&str) -> Option<String>> {
    pub(crate) lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// A set, non-blank value.
    pub(crate) fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    pub(crate) fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_owned())
    }

    pub(crate) fn parsed<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|err: T::Err| ConfigError::Invalid {
                    var,
                    reason: err.to_string(),
                }),
        }
    }

    pub(crate) fn parsed_range<T>(
        &self,
        var: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parsed(var, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                var,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    pub(crate) fn seconds(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.seconds_in(var, default, 1..=86_400)
    }

    pub(crate) fn seconds_in(
        &self,
        var: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.parsed_range(var, default, range)?))
    }

    pub(crate) fn millis_in(
        &self,
        var: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(
            self.parsed_range(var, default, range)?,
        ))
    }

    /// `{Q}_CONCURRENCY`, `{Q}_MAX_ATTEMPTS`, `{Q}_RETRY_BASE_MS`, `{Q}_RETRY_CAP_MS`,
    /// `{Q}_TIMEOUT_SECS` of the queue whose variables start with `vars[0]`'s prefix.
    pub(crate) fn queue(
        &self,
        vars: [&'static str; 6],
        defaults: QueueSettings,
    ) -> Result<QueueSettings, ConfigError> {
        let [concurrency, attempts, base, cap, timeout, lifetime] = vars;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(QueueSettings {
            concurrency: self.parsed_range(concurrency, defaults.concurrency, 1..=10_000)?,
            max_attempts: self.parsed_range(attempts, defaults.max_attempts, 1..=10_000)?,
            retry_base: self.millis_in(base, ms(defaults.retry_base), 1..=3_600_000)?,
            retry_cap: self.millis_in(cap, ms(defaults.retry_cap), 1..=86_400_000)?,
            timeout: self.seconds_in(timeout, defaults.timeout.as_secs(), 1..=86_400)?,
            lifetime: match (self.get(lifetime), defaults.lifetime) {
                (None, default) => default,
                (Some(_), default) => Some(self.seconds_in(
                    lifetime,
                    default.map_or(86_400, |d| d.as_secs()),
                    1..=30 * 86_400,
                )?),
            },
        })
    }

    pub(crate) fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                var,
                reason: format!("`{v}` is not a boolean (true/false)"),
            }),
        }
    }

    /// Where uploads live: a `file://` or `s3://` URL; a plain path is made an absolute
    /// `file://` URL. Default: `/var/lib/conveyor` in production, `.dev/storage`
    /// elsewhere.
    pub(crate) fn storage_url(
        &self,
        var: &'static str,
        production: bool,
    ) -> Result<String, ConfigError> {
        let default = if production {
            "/var/lib/conveyor"
        } else {
            ".dev/storage"
        };
        let raw = self.string(var, default).trim().to_owned();
        let invalid = |reason: String| ConfigError::Invalid { var, reason };
        if !raw.contains("://") {
            let path = std::path::absolute(&raw)
                .map_err(|err| invalid(format!("cannot resolve `{raw}`: {err}")))?;
            return url::Url::from_directory_path(&path)
                .map(|url| url.to_string().trim_end_matches('/').to_owned())
                .map_err(|()| invalid(format!("`{}` is not a usable directory", path.display())));
        }
        let url = url::Url::parse(&raw).map_err(|err| invalid(format!("not a URL ({err})")))?;
        match url.scheme() {
            "file" | "s3" => Ok(raw),
            other => Err(invalid(format!("scheme `{other}` is not one of file, s3"))),
        }
    }

    /// A comma-separated list of values.
    pub(crate) fn list<T>(&self, var: &'static str, default: &str) -> Result<Vec<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self.string(var, default);
        let items = raw
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse().map_err(|err: T::Err| ConfigError::Invalid {
                    var,
                    reason: err.to_string(),
                })
            })
            .collect::<Result<Vec<T>, _>>()?;
        if items.is_empty() {
            return Err(ConfigError::Invalid {
                var,
                reason: "the list is empty".into(),
            });
        }
        Ok(items)
    }

    pub(crate) fn url(
        &self,
        var: &'static str,
        default: &str,
        schemes: &[&str],
    ) -> Result<SecretString, ConfigError> {
        let raw = self.get(var).unwrap_or_else(|| default.to_owned());
        // The parse error is safe to show; the URL itself may hold a password and is not.
        let url = url::Url::parse(raw.trim()).map_err(|err| ConfigError::Invalid {
            var,
            reason: format!("not a URL ({err})"),
        })?;
        if !schemes.contains(&url.scheme()) {
            return Err(ConfigError::Invalid {
                var,
                reason: format!(
                    "scheme `{}` is not one of {}",
                    url.scheme(),
                    schemes.join(", ")
                ),
            });
        }
        Ok(SecretString::from(raw.trim().to_owned()))
    }

    /// `REDIS_CLUSTER_URLS`: the seed nodes of a Redis Cluster, comma-separated
    /// `redis://` or `rediss://` URLs (one scheme for all; database 0 only, the one a
    /// cluster has). `None` when unset: Conveyor then uses the one server of `REDIS_URL`.
    pub(crate) fn redis_cluster_urls(
        &self,
        var: &'static str,
    ) -> Result<Option<Vec<SecretString>>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(None);
        };
        let invalid = |reason: String| ConfigError::Invalid { var, reason };
        let mut scheme: Option<String> = None;
        let mut seeds = Vec::new();
        for (n, item) in raw.split(',').map(str::trim).enumerate() {
            let n = n + 1;
            if item.is_empty() {
                return Err(invalid(format!("URL {n} of the list is empty")));
            }
            // Name the position, never the URL: it may hold a password.
            let url = url::Url::parse(item)
                .map_err(|err| invalid(format!("URL {n} is not a URL ({err})")))?;
            if !matches!(url.scheme(), "redis" | "rediss") {
                return Err(invalid(format!(
                    "URL {n}: scheme `{}` is not one of redis, rediss",
                    url.scheme()
                )));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid(format!("URL {n} has no host")));
            }
            if !matches!(url.path(), "" | "/" | "/0") {
                return Err(invalid(format!(
                    "URL {n} names a database; a Redis Cluster has only database 0"
                )));
            }
            match &scheme {
                Some(first) if first != url.scheme() => {
                    return Err(invalid("every URL must use the same scheme".to_owned()));
                }
                Some(_) => {}
                None => scheme = Some(url.scheme().to_owned()),
            }
            seeds.push(SecretString::from(item.to_owned()));
        }
        Ok(Some(seeds))
    }

    /// A 256-bit key. Missing in production: an error naming it. Missing elsewhere: a
    /// random key for this process (recorded in `generated`, so the binary warns) —
    /// `Config::from_env` first fills it from the development keys file, so this only
    /// happens for configurations built from a map.
    pub(crate) fn key256(
        &self,
        var: &'static str,
        app_env: AppEnv,
        hint: &'static str,
        generated: &mut Vec<&'static str>,
    ) -> Result<Key256, ConfigError> {
        let Some(raw) = self.get(var) else {
            if app_env == AppEnv::Production {
                return Err(ConfigError::MissingSecret { var, hint });
            }
            generated.push(var);
            return Ok(SecretBox::new(
                Box::new(crate::crypto::random_bytes::<32>()),
            ));
        };
        Ok(SecretBox::new(Box::new(decode_key(var, &raw)?)))
    }

    pub(crate) fn previous_keys(&self, var: &'static str) -> Result<Vec<RetiredKey>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (id, key) = entry.split_once(':').ok_or_else(|| ConfigError::Invalid {
                    var,
                    reason: "entries must look like key_id:base64key".to_owned(),
                })?;
                Ok(RetiredKey {
                    id: id.trim().to_owned(),
                    key: SecretBox::new(Box::new(decode_key(var, key)?)),
                })
            })
            .collect()
    }

    pub(crate) fn key_id(&self, var: &'static str) -> Result<String, ConfigError> {
        let id = self.string(var, "k1");
        let valid = !id.is_empty()
            && id.len() <= 16
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(id)
        } else {
            Err(ConfigError::Invalid {
                var,
                reason: "must be 1 to 16 characters of A-Z, a-z, 0-9, - or _".to_owned(),
            })
        }
    }

    pub(crate) fn redis_prefix(&self) -> Result<String, ConfigError> {
        let prefix = self.string("REDIS_PREFIX", "conveyor");
        let valid = prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(prefix)
        } else {
            Err(ConfigError::Invalid {
                var: "REDIS_PREFIX",
                reason: "must be at most 64 characters of A-Z, a-z, 0-9, -, _ or .".to_owned(),
            })
        }
    }

    pub(crate) fn origins(&self, var: &'static str) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|origin| {
                let url = url::Url::parse(origin).map_err(|err| ConfigError::Invalid {
                    var,
                    reason: format!("`{origin}` is not an origin ({err})"),
                })?;
                let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
                if !matches!(url.scheme(), "http" | "https")
                    || !bare
                    || !origin.ends_with(|c: char| c != '/')
                {
                    return Err(ConfigError::Invalid {
                        var,
                        reason: format!("`{origin}` must look like https://host[:port]"),
                    });
                }
                Ok(origin.to_owned())
            })
            .collect()
    }
}

pub(crate) fn decode_key(var: &'static str, raw: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = BASE64
        .decode(raw.trim())
        .map_err(|_| ConfigError::Invalid {
            var,
            reason: "not valid base64".to_owned(),
        })?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| ConfigError::Invalid {
            var,
            reason: format!("decodes to {} bytes, 32 are required", bytes.len()),
        })
}
