//! Settings from a TOML file (`--config`), keyed by flag name: they become environment
//! variables before the flags are read, so flags and the real environment win over the file.

/// Why a settings file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not TOML.
    #[error("{path} is not valid TOML: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// It names a setting that does not exist, or gives one a table.
    #[error("{path}: unknown or malformed setting {key:?} (see `gridsocket serve --help`)")]
    Key {
        /// The file.
        path: String,
        /// The key.
        key: String,
    },
}

/// Reads a settings file into `(environment variable, value)` pairs: each key is a flag name
/// (`max_frame_bytes` or `max-frame-bytes`) and `known` maps the flags a file may set to
/// their variables. Lists become comma-separated values. The caller sets those not already
/// set, so flags and the environment win over the file.
pub fn config_file_env(
    path: &std::path::Path,
    known: &std::collections::HashMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigFileError::Parse {
        path: shown.clone(),
        source,
    })?;
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        let rendered = match value {
            toml::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(",")),
            other => scalar(other),
        };
        match (rendered, known.get(&flag)) {
            (Some(v), Some(env)) if flag != "config" => out.push((env.clone(), v)),
            _ => {
                return Err(ConfigFileError::Key {
                    path: shown,
                    key: key.clone(),
                });
            }
        }
    }
    Ok(out)
}
