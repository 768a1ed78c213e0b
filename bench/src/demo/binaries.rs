//! Finding the binaries the demo starts (next to its own executable) and, on a fresh
//! clone where `cargo run --bin handoff-demo` built only itself, building them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo profile a `target/` subdirectory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Dev,
}

impl Profile {
    /// `target/release` or `target/debug` (also under a `--target` triple); other
    /// directories are not cargo's.
    pub fn of(bin_dir: &Path) -> Option<Profile> {
        match bin_dir.file_name()?.to_str()? {
            "release" => Some(Profile::Release),
            "debug" => Some(Profile::Dev),
            _ => None,
        }
    }
}

/// The names in `names` with no executable file in `dir`.
pub fn missing(dir: &Path, names: &[&str]) -> Vec<String> {
    names.iter().filter(|name| !dir.join(name).is_file()).map(|name| (*name).to_owned()).collect()
}

/// The workspace this demo was built from, when it is still there.
fn workspace_manifest() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("Cargo.toml");
    manifest.is_file().then_some(manifest)
}

/// The command that builds what is missing: the daemon's package and this one.
pub fn build_command(profile: Profile, daemon_package: &str) -> Option<Command> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.arg("build").arg("--manifest-path").arg(workspace_manifest()?);
    if profile == Profile::Release {
        command.arg("--release");
    }
    command.args(["-p", daemon_package, "-p", "handoff-bench"]);
    Some(command)
}

/// Makes sure every binary in `names` is in `dir`, building them with cargo when not.
pub fn ensure(dir: &Path, names: &[&str], daemon_package: &str) -> Result<(), String> {
    let absent = missing(dir, names);
    if absent.is_empty() {
        return Ok(());
    }
    let hint = format!(
        "build them first: cargo build --release -p {daemon_package} -p handoff-bench (then run target/release/handoff-demo)"
    );
    let command = Profile::of(dir).and_then(|profile| build_command(profile, daemon_package));
    let Some(mut command) = command else {
        return Err(format!("{} not found in {}; {hint}", absent.join(", "), dir.display()));
    };
    eprintln!("handoff-demo: {} not built yet; building: {command:?}", absent.join(", "));
    let status = command.status().map_err(|e| format!("running cargo failed ({e}); {hint}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status}); {hint}"));
    }
    let still = missing(dir, names);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("{} still not found in {} after the build; {hint}", still.join(", "), dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_come_from_the_directory_name() {
        assert_eq!(Profile::of(Path::new("/w/target/release")), Some(Profile::Release));
        assert_eq!(Profile::of(Path::new("/w/target/x86_64-unknown-linux-gnu/debug")), Some(Profile::Dev));
        assert_eq!(Profile::of(Path::new("/usr/bin")), None);
    }

    #[test]
    fn missing_names_what_is_not_there() {
        let dir = std::env::temp_dir().join(format!("handoff-demo-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("present"), b"").expect("a file");
        assert_eq!(missing(&dir, &["present", "absent"]), ["absent"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_build_command_matches_the_profile() {
        let release = build_command(Profile::Release, "handoff-smol").expect("the workspace is here");
        let args: Vec<String> = release.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(
            args.contains(&"--release".to_owned())
                && args.ends_with(&["-p".into(), "handoff-smol".into(), "-p".into(), "handoff-bench".into()]),
            "{args:?}"
        );
        let dev = build_command(Profile::Dev, "handoff-tokio").expect("the workspace is here");
        assert!(!dev.get_args().any(|a| a == "--release"));
    }
}
