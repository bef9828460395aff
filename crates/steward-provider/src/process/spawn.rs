//! Starting a child: the checks, the provisional record, the spawn with the record's nonce,
//! the full record, and the hand-over to the child's supervisor (see the `process` module
//! for what the child gets, and `records.rs` for the records).

use super::procfs::Identity;
use super::records::{
    random_hex, remove_record, write_provisional, write_record, Provisional, Record,
};
use super::supervisor::{ChildState, GroupSignal, Instance, Leader};
use super::{ProcessProvider, NONCE_VAR};
use crate::{InstanceSpec, ProviderError};
use dashmap::mapref::entry::Entry as Slot;
use nix::errno::Errno;
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use steward_domain::{Generation, WorkspaceId};
use tokio::process::Command;
use tokio::runtime::Handle;

impl ProcessProvider {
    /// Flow: check the spec, write the provisional record (durably, in the state directory),
    /// open the log, spawn with the record's nonce, write the full record (durably), delete
    /// the provisional one, hand the child to its supervisor. Errors: `AlreadyExists` if the
    /// workspace's child runs; `InvalidSpec` for a missing or unrunnable program or a
    /// malformed environment; `Engine` for I/O failures — nothing is spawned without a
    /// provisional record, and a child whose full record could not be written is killed.
    pub(super) async fn spawn(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        let id = spec.workspace_id;
        if self.closed.load(Ordering::Acquire) {
            return Err(ProviderError::Engine(
                "the process provider is shutting down".to_owned(),
            ));
        }
        let argv = self.argv(spec)?;
        spec.check_env()?;

        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.envs(&spec.env);
        for (key, value) in &spec.secrets {
            command.env(key, value.expose_secret());
        }
        command
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        // `command` holds secret values from here on: it is never logged or formatted.

        // The slot stays locked from the check to the insert, so two starts cannot both spawn;
        // nothing in between awaits (the records' fsyncs block this shard of the map for a
        // few milliseconds, no more).
        let slot = self.children.entry(id);
        if let Slot::Occupied(existing) = &slot {
            if existing.get().state() == ChildState::Running {
                return Err(ProviderError::AlreadyExists(existing.get().generation.0));
            }
            // A dead child is replaced; its supervisor finishes draining its group on its own.
        }
        let started_at = SystemTime::now();
        let provisional = match self.provisional(id, spec.generation, started_at)? {
            Some((path, nonce)) => {
                // Last: neither the env nor the secrets can choose it.
                command.env(NONCE_VAR, nonce);
                Some(path)
            }
            None => None,
        };
        // Until the spawn succeeds, a failure leaves no child: its provisional record goes.
        let abandon = |error: ProviderError| {
            if let Some(path) = &provisional {
                remove_record(path);
            }
            error
        };
        let journal = self.journals.of(id);
        let log_error = |e: io::Error| {
            abandon(ProviderError::Engine(format!(
                "log of workspace {id} in {}: {e}",
                self.config.log_dir.display()
            )))
        };
        journal
            .append(
                spec.generation,
                [format!("=== steward: generation {} starting", spec.generation).as_str()],
            )
            .map_err(log_error)?;
        let (output, pipe, pipe_path) = self
            .journals
            .open_pipe(id, spec.generation)
            .map_err(log_error)?;
        let stderr = match output.try_clone() {
            Ok(stderr) => stderr,
            Err(e) => {
                let _ = std::fs::remove_file(&pipe_path);
                return Err(log_error(e));
            }
        };
        command.stdout(output).stderr(stderr);

        let spawned = command.spawn();
        // The daemon's copies of the child's end go now: the pipe ends when the child's do.
        drop(command);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_file(&pipe_path);
                return Err(abandon(spawn_error(&argv[0], &e)));
            }
        };
        let output = tokio::spawn(journal.pump(id, spec.generation, pipe, pipe_path));
        let pid = child
            .id()
            .ok_or_else(|| ProviderError::Engine("the started process has no pid".to_owned()))?;
        let group = i32::try_from(pid)
            .map(Pid::from_raw)
            .map_err(|_| ProviderError::Engine(format!("pid {pid} out of range")))?;
        let recorded = self.record(id, spec.generation, group, started_at);
        let record = match &recorded {
            Ok(full) => {
                if let Some(path) = &provisional {
                    remove_record(path);
                }
                full.clone()
            }
            // The child is killed below; until its group is gone, its provisional record
            // names it (should the daemon crash before the kill lands).
            Err(_) => provisional,
        };
        let tracked = self.supervise(
            &Handle::current(),
            Instance {
                workspace: id,
                generation: spec.generation,
                group,
                started_at,
                record,
                leader: Leader::Child(child),
                output: Some(output),
            },
        );
        if let Err(error) = recorded {
            tracing::warn!(workspace = %id, generation = %spec.generation, pid, %error, "could not record the instance process; killing it");
            tracked.request(GroupSignal::Kill);
            return Err(error);
        }
        slot.insert(tracked);
        tracing::info!(workspace = %id, generation = %spec.generation, pid, "instance process started");
        Ok(())
    }

    /// The program and arguments to run for `spec`.
    fn argv<'a>(&'a self, spec: &'a InstanceSpec) -> Result<&'a [String], ProviderError> {
        let argv = match spec.command.as_deref() {
            Some(command) if !command.is_empty() => command,
            _ => self.config.default_command.as_slice(),
        };
        let Some(program) = argv.first() else {
            return Err(ProviderError::InvalidSpec(
                "the workspace has no command and the process provider has no default_command"
                    .to_owned(),
            ));
        };
        if program.is_empty() {
            return Err(ProviderError::InvalidSpec(
                "the program name is empty".to_owned(),
            ));
        }
        if let Some(i) = argv.iter().position(|arg| arg.contains('\0')) {
            return Err(ProviderError::InvalidSpec(format!(
                "command element {i} contains a NUL byte"
            )));
        }
        Ok(argv)
    }

    /// Records a child that has just started, when there is a state directory: the path of
    /// its record, durable once this returns.
    fn record(
        &self,
        workspace: WorkspaceId,
        generation: Generation,
        group: Pid,
        started_at: SystemTime,
    ) -> Result<Option<PathBuf>, ProviderError> {
        let dir = &self.config.state_dir;
        if dir.as_os_str().is_empty() {
            return Ok(None);
        }
        let identity = Identity::of(group).ok_or_else(|| {
            ProviderError::Engine(format!("cannot read the start time of process {group}"))
        })?;
        let record = Record {
            workspace,
            generation,
            identity,
            boot_id: self.boot_id.clone(),
            started_at,
        };
        write_record(dir, &record).map(Some).map_err(|e| {
            ProviderError::Engine(format!(
                "recording process {group} in {}: {e}",
                dir.display()
            ))
        })
    }

    /// Before a spawn, when there is a state directory: durably writes the provisional record
    /// of a start; returns its path and the nonce to put in the child's environment.
    fn provisional(
        &self,
        workspace: WorkspaceId,
        generation: Generation,
        started_at: SystemTime,
    ) -> Result<Option<(PathBuf, String)>, ProviderError> {
        let dir = &self.config.state_dir;
        if dir.as_os_str().is_empty() {
            return Ok(None);
        }
        let written = random_hex::<16>().and_then(|nonce| {
            let provisional = Provisional {
                workspace,
                generation,
                nonce,
                boot_id: self.boot_id.clone(),
                started_at,
            };
            let path = write_provisional(dir, &provisional)?;
            Ok(Some((path, provisional.nonce)))
        });
        written.map_err(|e| {
            ProviderError::Engine(format!(
                "recording the start of workspace {workspace} in {}: {e}",
                dir.display()
            ))
        })
    }
}

/// A spawn failure, told in terms of the spec where the spec is at fault.
fn spawn_error(program: &str, error: &io::Error) -> ProviderError {
    match error.kind() {
        io::ErrorKind::NotFound => {
            ProviderError::InvalidSpec(format!("program {program:?} not found"))
        }
        io::ErrorKind::PermissionDenied => ProviderError::InvalidSpec(format!(
            "program {program:?} cannot be executed (permission denied)"
        )),
        _ if error.raw_os_error() == Some(Errno::ENOEXEC as i32) => ProviderError::InvalidSpec(
            format!("program {program:?} is not in an executable format"),
        ),
        _ => ProviderError::Engine(format!("cannot start {program:?}: {error}")),
    }
}
