//! Where the URL and admin key come from: flags, then the environment
//! (both read by clap into [`Global`]), then the config file, then the
//! default URL.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::args::Global;
use crate::error::CliError;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// What the command talks to.
pub struct Target {
    pub url: String,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    admin_key: Option<String>,
}

/// Resolves the target; warns on stderr when the config file holds a key
/// others may read.
pub fn resolve(global: &Global) -> Result<Target, CliError> {
    let file = match &global.config {
        Some(path) => read(path, true)?,
        None => match default_path() {
            Some(path) => read(&path, false)?,
            None => FileConfig::default(),
        },
    };
    // An empty value (`SUPPORTRAG_ADMIN_KEY=`) means unset, as in a shell.
    let given = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    Ok(Target {
        url: given(&global.url)
            .or(given(&file.url))
            .unwrap_or_else(|| DEFAULT_URL.to_owned()),
        key: given(&global.key).or(given(&file.admin_key)),
    })
}

/// `$XDG_CONFIG_HOME/supportrag/config.toml`, else
/// `~/.config/supportrag/config.toml`.
fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("supportrag").join("config.toml"))
}

/// The file's settings; a missing file is an error only when it was named.
fn read(path: &Path, required: bool) -> Result<FileConfig, CliError> {
    let error = |detail: String| CliError::Config {
        path: path.to_owned(),
        detail,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileConfig::default());
        }
        Err(e) => return Err(error(e.to_string())),
    };
    let parsed: FileConfig = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| error(e.to_string()))?;
    if parsed.admin_key.is_some() {
        warn_if_readable_by_others(path);
    }
    Ok(parsed)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} holds the admin key and others can read it; run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn global(config: &Path, url: Option<&str>, key: Option<&str>) -> Global {
        Global {
            url: url.map(str::to_owned),
            key: key.map(str::to_owned),
            config: Some(config.to_owned()),
            json: false,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_the_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "url = \"http://file:1\"\nadmin_key = \"file-key\"\n")
            .expect("write");
        let from_file = resolve(&global(&path, None, None)).expect("resolves");
        assert_eq!(from_file.url, "http://file:1");
        assert_eq!(from_file.key.as_deref(), Some("file-key"));
        let from_flags =
            resolve(&global(&path, Some("http://flag:2"), Some("flag-key"))).expect("resolves");
        assert_eq!(from_flags.url, "http://flag:2");
        assert_eq!(from_flags.key.as_deref(), Some("flag-key"));

        let empty_flags = resolve(&global(&path, Some(""), Some(" "))).expect("resolves");
        assert_eq!(empty_flags.url, "http://file:1");
        assert_eq!(empty_flags.key.as_deref(), Some("file-key"));

        std::fs::write(&path, "").expect("write");
        let defaults = resolve(&global(&path, None, None)).expect("resolves");
        assert_eq!(defaults.url, DEFAULT_URL);
        assert_eq!(defaults.key, None);
    }

    #[test]
    fn a_named_file_must_exist_and_parse() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            resolve(&global(&missing, None, None)),
            Err(CliError::Config { .. })
        ));
        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "adminkey = \"x\"\n").expect("write");
        let err = resolve(&global(&typo, None, None))
            .err()
            .map(|e| e.exit_code());
        assert_eq!(err, Some(2));
    }
}
