//! One run's workload, host side: θ0 (host-owned), each window's batch and peer uploads, and
//! what the guest submits. Built before the clock starts, read after it stops.

use std::path::Path;

use tch::{Device, Tensor};

use crusades_reference::compress::{CompressedTensor, Geometry};
use crusades_reference::config::WorkloadConfig;
use crusades_reference::corpus::Corpus;
use crusades_reference::io::{self, Upload};
use crusades_reference::model::Params;

use crate::failure::{Failure, FailureCode};

/// One closed window: copies of the guest's loss and upload.
pub struct Submitted {
    pub loss: Tensor,
    pub upload: Vec<CompressedTensor>,
}

pub struct Session {
    pub config: WorkloadConfig,
    pub device: Device,
    pub names: Vec<String>,
    /// θ: the f32 leaves the guest updates in place. The host reads the final weights here.
    pub params: Vec<Tensor>,
    pub geometries: Vec<Geometry>,
    /// (inputs, labels) per window, and the corpus page each came from.
    pub batches: Vec<(Tensor, Tensor)>,
    pub pages: Vec<u64>,
    /// `peers[w][j]`: peer j's upload for window w.
    pub peers: Vec<Vec<Upload>>,
    pub submitted: Vec<Submitted>,
}

/// The file that holds peer j's upload for window w in a prepared workload.
pub fn peer_upload_path(workload_dir: &Path, window: u64, peer: u64) -> std::path::PathBuf {
    workload_dir
        .join("peers")
        .join(format!("w{window}-p{peer}.safetensors"))
}

impl Session {
    /// θ0 and no windows: for tests and benchmarks of the host itself.
    pub fn without_windows(config: &WorkloadConfig, device: Device) -> Result<Self, Failure> {
        let params = Params::init(&config.model, config.seed, device)
            .map_err(|e| Failure::internal(format!("setting up θ0: {e}")))?;
        let geometries = params
            .specs
            .iter()
            .map(|s| Geometry::new(&s.shape, config.hparams.chunk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::internal(e.to_string()))?;
        Ok(Self {
            config: config.clone(),
            device,
            names: params.names().map(str::to_string).collect(),
            params: params.tensors,
            geometries,
            batches: Vec::new(),
            pages: Vec::new(),
            peers: Vec::new(),
            submitted: Vec::new(),
        })
    }

    /// θ0, the batches, and the peer uploads read from a prepared workload directory.
    pub fn new(
        config: &WorkloadConfig,
        corpus: &Corpus,
        workload_dir: &Path,
        device: Device,
    ) -> Result<Self, Failure> {
        let setup = |e: crusades_reference::Error| {
            Failure::new(
                if e.is_input_error() {
                    FailureCode::Device
                } else {
                    FailureCode::Internal
                },
                format!("setting up the workload: {e}"),
            )
        };
        let params = Params::init(&config.model, config.seed, device).map_err(setup)?;
        let names: Vec<String> = params.names().map(str::to_string).collect();
        let chunk = config.hparams.chunk;
        let geometries = params
            .specs
            .iter()
            .map(|s| Geometry::new(&s.shape, chunk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup)?;
        let mut batches = Vec::new();
        let mut pages = Vec::new();
        let mut peers = Vec::new();
        for w in 0..config.windows {
            let page = corpus.window_page(config.uid, w).map_err(setup)?;
            batches.push(page.inputs_and_labels(device).map_err(setup)?);
            pages.push(page.index);
            let mut window_peers = Vec::new();
            for j in 0..config.peers {
                let path = peer_upload_path(workload_dir, w, j);
                let (upload, _) = io::read_upload(&path, device).map_err(|e| {
                    Failure::internal(format!(
                        "the prepared workload is damaged ({e}); delete {} to rebuild it",
                        workload_dir.display()
                    ))
                })?;
                if upload.names != names {
                    return Err(Failure::internal(format!(
                        "{}: its tensors are not the model's; delete {} to rebuild the workload",
                        path.display(),
                        workload_dir.display()
                    )));
                }
                window_peers.push(upload);
            }
            peers.push(window_peers);
        }
        Ok(Self {
            config: config.clone(),
            device,
            names,
            params: params.tensors,
            geometries,
            batches,
            pages,
            peers,
            submitted: Vec::new(),
        })
    }
}
