//! Who this process is in a multi-process run, from the variables launchers already set:
//! torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, or Slurm's
//! `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` when the job script exports `MASTER_ADDR`.

use std::time::Duration;

use super::ParallelError;

/// torchrun's default rendezvous port.
pub const DEFAULT_PORT: u16 = 29500;
/// How long a rank waits for the others at a collective unless `PCC_DIST_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// This process's place among the ranks of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank's index on its host: the GPU it drives.
    pub local_rank: usize,
    /// `MASTER_ADDR:MASTER_PORT`, where rank 0 listens.
    pub master: String,
}

impl World {
    /// The world the environment describes, or `None` for a single-process run (no
    /// `WORLD_SIZE`, or one rank; Slurm's variables only count where `MASTER_ADDR` is set, so a
    /// one-task `srun` or an unrelated job step is not taken for a distributed run).
    pub fn from_env() -> Result<Option<World>, ParallelError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`World::from_env`] over any variable lookup (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<World>, ParallelError> {
        let (rank_var, size_var, local_var) = if var("WORLD_SIZE").is_some() {
            ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if var("SLURM_NTASKS").is_some() && var("MASTER_ADDR").is_some() {
            ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
        } else {
            return Ok(None);
        };
        let size = number(&var, size_var)?.expect("checked above");
        if size == 0 {
            return Err(env_err(size_var, "0", "a run needs at least one rank"));
        }
        if size == 1 {
            return Ok(None);
        }
        let rank = number(&var, rank_var)?.ok_or_else(|| env_err(rank_var, "", &format!("must be set when {size_var} is {size}")))?;
        if rank >= size {
            return Err(env_err(rank_var, &rank.to_string(), &format!("must be below {size_var}={size}")));
        }
        let local_rank = number(&var, local_var)?.unwrap_or(rank);
        let addr = var("MASTER_ADDR").ok_or_else(|| env_err("MASTER_ADDR", "", "must name rank 0's host (e.g. 127.0.0.1 on one machine)"))?;
        let port = match var("MASTER_PORT") {
            None => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().map_err(|_| env_err("MASTER_PORT", &p, "not a port number"))?,
        };
        let host = if addr.contains(':') && !addr.starts_with('[') { format!("[{addr}]") } else { addr };
        Ok(Some(World { rank, size, local_rank, master: format!("{host}:{port}") }))
    }
}

/// The collective timeout: `PCC_DIST_TIMEOUT` seconds, else [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration, ParallelError> {
    match std::env::var("PCC_DIST_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
            _ => Err(env_err("PCC_DIST_TIMEOUT", &v, "not a positive number of seconds")),
        },
    }
}

fn number(var: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<Option<usize>, ParallelError> {
    match var(name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| env_err(name, &v, "not a whole number")),
    }
}

fn env_err(var: &'static str, value: &str, reason: &str) -> ParallelError {
    ParallelError::Env { var, value: value.to_string(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world(pairs: &[(&str, &str)]) -> Result<Option<World>, ParallelError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        World::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let w = world(&[("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node7"), ("MASTER_PORT", "1234")]).unwrap().unwrap();
        assert_eq!(w, World { rank: 3, size: 4, local_rank: 1, master: "node7:1234".into() });
        let w = world(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "::1")]).unwrap().unwrap();
        assert_eq!((w.local_rank, w.master.as_str()), (1, "[::1]:29500"));
    }

    #[test]
    fn single_process_and_slurm() {
        assert_eq!(world(&[]).unwrap(), None);
        assert_eq!(world(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        // Slurm alone (no MASTER_ADDR) is not a distributed run.
        assert_eq!(world(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "2")]).unwrap(), None);
        let w = world(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "2"), ("SLURM_LOCALID", "0"), ("MASTER_ADDR", "n1")]).unwrap().unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (2, 4, 0));
    }

    #[test]
    fn bad_variables_are_named() {
        let e = world(&[("WORLD_SIZE", "two")]).unwrap_err().to_string();
        assert!(e.contains("WORLD_SIZE") && e.contains("whole number"), "{e}");
        let e = world(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h")]).unwrap_err().to_string();
        assert!(e.contains("RANK") && e.contains("below"), "{e}");
        let e = world(&[("WORLD_SIZE", "2"), ("RANK", "0")]).unwrap_err().to_string();
        assert!(e.contains("MASTER_ADDR"), "{e}");
        let e = world(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")]).unwrap_err().to_string();
        assert!(e.contains("MASTER_PORT"), "{e}");
    }
}
