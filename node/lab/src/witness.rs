//! `dsrlb witness` in the lab: the tie-breaker of a pair, run in any host (typically a
//! backend's namespace) as an unprivileged user, with a config of `[node]`, `[cluster]` and
//! `[metrics]` only — the way docs/design.md#witness tells operators to run it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Host, Lab, LabError, LabProcess, METRICS_PORT, PEER_PORT};

/// The user the lab runs witnesses as: `nobody`, so a test shows they need no root.
const NOBODY: u32 = 65534;

impl Lab {
    /// The config of a witness with id `id` on `host`, a member of a cluster of every lab
    /// node and itself.
    pub fn witness_config(&self, host: &Host, id: u64) -> Result<String, LabError> {
        let data_dir = self.witness_data_dir(host);
        let mut members: Vec<String> = self
            .nodes()
            .iter()
            .enumerate()
            .map(|(k, n)| format!("\"{}={}:{PEER_PORT}\"", k + 1, n.ip))
            .collect();
        members.push(format!("\"{id}={}:{PEER_PORT}\"", host.ip));
        let mut c = String::new();
        let _ = write!(
            c,
            "[node]\nid = {id}\ndata_dir = {:?}\n\n\
             [metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n\n\
             [cluster]\nlisten = \"{}:{PEER_PORT}\"\nmembers = [{}]\ntoken_file = {:?}\n",
            data_dir.display().to_string(),
            host.ip,
            members.join(", "),
            self.witness_token_file(host)?.display().to_string(),
        );
        Ok(c)
    }

    /// The witness's copy of the cluster token, owned by `nobody` and private to it: the
    /// node refuses a token file others can read, and the lab's own is root's.
    pub fn witness_token_file(&self, host: &Host) -> Result<PathBuf, LabError> {
        let path = self.dir().join(format!("{}-witness.token", host.name));
        if !path.exists() {
            let source = self.cluster_token_file()?;
            let file = |what: &'static str, path: &Path| {
                let path = path.to_path_buf();
                move |source| LabError::File { what, path, source }
            };
            let token = std::fs::read(&source).map_err(file("read cluster token", &source))?;
            super::lbnode::write_private(&path, &token)
                .map_err(file("write witness token", &path))?;
            std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY))
                .map_err(file("chown witness token", &path))?;
        }
        Ok(path)
    }

    /// Where the witness on `host` keeps its Raft log.
    pub fn witness_data_dir(&self, host: &Host) -> PathBuf {
        self.dir().join(format!("{}-witness-data", host.name))
    }

    /// Writes the witness config for `host` and starts `dsrlb witness` there as user
    /// `nobody` (through `setpriv`), from a copy of `dsrlb` that user can run.
    pub fn spawn_witness(
        &self,
        host: &Host,
        id: u64,
        dsrlb: &Path,
    ) -> Result<LabProcess, LabError> {
        let file = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| LabError::File { what, path, source }
        };
        let data_dir = self.witness_data_dir(host);
        std::fs::create_dir_all(&data_dir).map_err(file("create witness data dir", &data_dir))?;
        std::os::unix::fs::chown(&data_dir, Some(NOBODY), Some(NOBODY))
            .map_err(file("chown witness data dir", &data_dir))?;
        // The build's own path may sit under a directory only root can enter (/root).
        let bin = self.dir().join("dsrlb-for-nobody");
        if !bin.exists() {
            std::fs::copy(dsrlb, &bin).map_err(file("copy dsrlb", &bin))?;
        }
        let path = self.dir().join(format!("{}-witness.toml", host.name));
        let config = self.witness_config(host, id)?;
        std::fs::write(&path, config).map_err(file("write witness config", &path))?;
        let args: Vec<std::ffi::OsString> = vec![
            format!("--reuid={NOBODY}").into(),
            format!("--regid={NOBODY}").into(),
            "--clear-groups".into(),
            "--".into(),
            bin.into(),
            "witness".into(),
            "--config".into(),
            path.into(),
        ];
        host.spawn_with_env(Path::new("setpriv"), args, [("RUST_LOG", "info")])
    }
}
