//! Where the configuration comes from when no operator pushes it: the
//! embedded default, or a directory of UploadPolicy/Secret YAML polled for
//! changes.
//!
//! Polling a content digest (every `interval`) rather than inotify: a
//! Kubernetes ConfigMap volume changes by swapping a symlink, which inotify
//! watchers routinely miss, and a directory of policies is small.
//! A directory that fails to parse or compile keeps the last good config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::App;
use crate::metrics::ResultLabels;
use crate::runtime::{self, Active};

pub struct Source {
    pub policies: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub state_dir: Option<PathBuf>,
}

impl Source {
    /// Loads the first configuration. A broken directory falls back to the
    /// last known good config in the state dir, when there is one.
    pub fn initial(&self, app: &App) -> Result<Option<[u8; 32]>, String> {
        let Some(dir) = &self.policies else {
            let cfg = runtime::compile_texts(&[(
                "embedded default".into(),
                runtime::DEFAULT_POLICY.into(),
            )])?;
            self.apply(app, cfg, "embedded default")?;
            return Ok(None);
        };
        match self.load_dir(app, dir) {
            Ok(digest) => Ok(Some(digest)),
            Err(e) => {
                let Some(state) = &self.state_dir else {
                    return Err(e);
                };
                let cfg = runtime::read_persisted(state)
                    .map_err(|s| format!("{e}; and no last known good config: {s}"))?;
                tracing::error!(error = %e, "policies do not load; serving the last known good config");
                self.apply(app, cfg, "last known good")?;
                Ok(None)
            }
        }
    }

    fn load_dir(&self, app: &App, dir: &std::path::Path) -> Result<[u8; 32], String> {
        let (files, digest) = runtime::read_dir(dir)?;
        let texts: Vec<(String, String)> = files
            .into_iter()
            .map(|(p, t)| (p.display().to_string(), t))
            .collect();
        let cfg = runtime::compile_texts(&texts)?;
        self.apply(app, cfg, &dir.display().to_string())?;
        Ok(digest)
    }

    fn apply(
        &self,
        app: &App,
        cfg: sluice_policy::ProxyConfig,
        origin: &str,
    ) -> Result<(), String> {
        if app.current.version().as_deref() == Some(cfg.version.as_str()) {
            return Ok(());
        }
        let version = cfg.version.clone();
        let routes = cfg.routes.len();
        let active = Active::build(cfg, &self.data_dir)?;
        if let Some(state) = &self.state_dir
            && let Err(e) = runtime::persist(state, &active.config)
        {
            tracing::warn!(error = %e, "could not persist the config as last known good");
        }
        app.current.store(active, &app.metrics);
        tracing::info!(%version, routes, origin, "configuration applied");
        Ok(())
    }

    /// Polls the policies directory until shutdown; applies what changed.
    pub async fn watch(
        self,
        app: Arc<App>,
        mut digest: Option<[u8; 32]>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(dir) = self.policies.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = match runtime::read_dir(&dir) {
                Ok((_, d)) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the policies directory; keeping the current config");
                    continue;
                }
            };
            if Some(now) == digest {
                continue;
            }
            digest = Some(now);
            match self.load_dir(&app, &dir) {
                Ok(_) => {}
                Err(e) => {
                    app.metrics
                        .config_reloads
                        .get_or_create(&ResultLabels {
                            result: "error".into(),
                        })
                        .inc();
                    tracing::error!(error = %e, "policies changed but do not load; keeping the current config");
                }
            }
        }
    }
}
