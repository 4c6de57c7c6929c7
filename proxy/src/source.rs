//! Where the configuration comes from: the embedded default, a directory of
//! UploadPolicy/Secret YAML polled for changes, or (managed by the operator)
//! pushes to the admin API, booting from the last known good config, else the
//! ConfigMap snapshot, else nothing.
//!
//! Polling a content digest (every `interval`) rather than inotify: a
//! Kubernetes ConfigMap volume changes by swapping a symlink, which inotify
//! watchers routinely miss, and a directory of policies is small.
//! Each document of the directory that does not decode or compile is left out
//! (and listed on /readyz); a directory that does not read at all (or in which
//! no file is YAML) keeps the last good config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::App;
use crate::metrics::ResultLabels;
use crate::runtime::{self, Active};

pub struct Source {
    pub policies: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub state_dir: Option<PathBuf>,
    /// The ProxyConfig JSON the operator keeps in a ConfigMap, mounted as a file.
    pub snapshot: Option<PathBuf>,
    /// Configuration comes from the operator (pushes, snapshot), not the embedded default.
    pub managed: bool,
}

impl Source {
    /// Loads the first configuration. A broken directory falls back to the
    /// last known good config in the state dir, when there is one.
    pub fn initial(&self, app: &App) -> Result<Option<[u8; 32]>, String> {
        if self.policies.is_none() && self.managed {
            self.initial_managed(app);
            return Ok(None);
        }
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

    /// Last known good, else the snapshot, else nothing: then every route answers
    /// 503 `no_config` and /readyz says why, until the operator pushes.
    fn initial_managed(&self, app: &App) {
        if let Some(state) = &self.state_dir {
            match runtime::read_persisted(state) {
                Ok(cfg) => match self.apply(app, cfg, "last known good") {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "the last known good config does not build")
                    }
                },
                Err(e) => tracing::info!(reason = %e, "no last known good config"),
            }
        }
        if let Some(snap) = &self.snapshot {
            match std::fs::read(snap)
                .map_err(|e| format!("{}: {e}", snap.display()))
                .and_then(|b| runtime::parse_config(&b))
            {
                Ok(cfg) => match self.apply(app, cfg, "config snapshot") {
                    Ok(()) => return,
                    Err(e) => tracing::error!(error = %e, "the config snapshot does not build"),
                },
                Err(e) => tracing::warn!(error = %e, "no usable config snapshot"),
            }
        }
        tracing::warn!(
            "no configuration yet: every route answers 503 until the operator pushes one"
        );
    }

    /// A config pushed to the admin API: built, swapped in, persisted. In-flight
    /// transfers keep the route they started with (they hold its Arc).
    pub fn push(&self, app: &App, cfg: sluice_policy::ProxyConfig) -> Result<String, String> {
        let version = cfg.version.clone();
        self.apply(app, cfg, "push")?;
        Ok(version)
    }

    fn load_dir(&self, app: &App, dir: &std::path::Path) -> Result<[u8; 32], String> {
        let (files, digest) = runtime::read_dir(dir)?;
        let texts: Vec<(String, String)> = files
            .into_iter()
            .map(|(p, t)| (p.display().to_string(), t))
            .collect();
        let (cfg, not_accepted) = runtime::compile_files(&texts)?;
        self.apply(app, cfg, &dir.display().to_string())?;
        // Also when the routes did not change: which documents are out may have.
        app.current.set_not_accepted(not_accepted);
        Ok(digest)
    }

    fn apply(
        &self,
        app: &App,
        cfg: sluice_policy::ProxyConfig,
        origin: &str,
    ) -> Result<(), String> {
        // Pushed, persisted and snapshot configs did not come out of compile here. The
        // version is a hash of the routes: recomputing it catches one edited or cut
        // on the way, and makes "same version" mean "same routes".
        cfg.check()?;
        if app.current.version().as_deref() == Some(cfg.version.as_str()) {
            return Ok(());
        }
        let version = cfg.version.clone();
        let routes = cfg.routes.len();
        let active = Active::build(
            cfg,
            &self.data_dir,
            &app.remotes.engines,
            &app.remotes.credentials,
        )?;
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
        self: Arc<Self>,
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
