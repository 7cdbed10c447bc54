//! Safetensors files: uploads, weights and peer uploads, readable by Python's `safetensors`.
//!
//! Reading goes through the `safetensors` crate's validating parser, so a malformed, truncated
//! or inconsistent file is an error that names the file, never a panic.
//!
//! Writing is our own, because the crate serialises `__metadata__` from a `HashMap` in random
//! order, and the same workload must give byte-identical files. Ours is canonical: the JSON
//! header has sorted keys (serde_json's map) and no spaces, padded with spaces to a multiple of
//! 8 bytes; tensor data follows in the order given. Writing is atomic (a temporary file renamed
//! into place), so a crash never leaves half a file where a good one was.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::compress::{CompressedTensor, CompressorConfig, Geometry};
use crate::error::{Error, Result};

/// A tensor's bytes on the host, ready to be written.
pub struct HostTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl HostTensor {
    /// Copies a tensor to the host in its own dtype.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let dtype = match t.kind() {
            Kind::Float => Dtype::F32,
            Kind::Double => Dtype::F64,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Uint8 => Dtype::U8,
            Kind::Int8 => Dtype::I8,
            Kind::Int16 => Dtype::I16,
            Kind::Int => Dtype::I32,
            Kind::Int64 => Dtype::I64,
            Kind::Bool => Dtype::BOOL,
            other => return Err(Error::Shape(format!("cannot write a {other:?} tensor"))),
        };
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        Ok(Self {
            dtype,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data,
        })
    }

    /// Integer indices as u16, the wire type of upload indices.
    pub fn u16_from(t: &Tensor) -> Result<Self> {
        let t = t
            .f_detach()?
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Int64)?
            .f_contiguous()?;
        let values = Vec::<i64>::try_from(&t.f_flatten(0, -1)?)?;
        let mut data = Vec::with_capacity(values.len() * 2);
        for v in values {
            let v = u16::try_from(v)
                .map_err(|_| Error::Shape(format!("index {v} does not fit in u16")))?;
            data.extend_from_slice(&v.to_le_bytes());
        }
        Ok(Self {
            dtype: Dtype::U16,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data,
        })
    }
}

/// The tensors and metadata of one safetensors file, in the file's order.
pub struct TensorFile {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Reads every tensor of a safetensors file onto `device`. u16 and u32 tensors (which libtorch
/// lacks) are widened to i64.
pub fn read(path: &Path, device: Device) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let parsed = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::file(
            path,
            format!("not a valid safetensors file ({e}); is it truncated or of another format?"),
        )
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("unreadable safetensors header: {e}")))?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = Vec::new();
    // The file's own order (by offset), so that uploads keep the parameter order.
    let mut views = parsed.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    for (name, view) in views {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let data = view.data();
        let widen = |values: Vec<i64>| Tensor::f_from_slice(&values)?.f_view(shape.as_slice());
        let t = match view.dtype() {
            Dtype::U16 => widen(
                data.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            )?,
            Dtype::U32 => widen(
                data.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
            )?,
            dtype => {
                let kind = match dtype {
                    Dtype::F32 => Kind::Float,
                    Dtype::F64 => Kind::Double,
                    Dtype::F16 => Kind::Half,
                    Dtype::BF16 => Kind::BFloat16,
                    Dtype::U8 => Kind::Uint8,
                    Dtype::I8 => Kind::Int8,
                    Dtype::I16 => Kind::Int16,
                    Dtype::I32 => Kind::Int,
                    Dtype::I64 => Kind::Int64,
                    Dtype::BOOL => Kind::Bool,
                    other => {
                        return Err(Error::file(
                            path,
                            format!("tensor {name} has dtype {other:?}, which is not supported"),
                        ))
                    }
                };
                Tensor::f_from_data_size(data, &shape, kind)?
            }
        };
        tensors.push((name, t.f_to_device(device)?));
    }
    Ok(TensorFile { tensors, metadata })
}

/// Writes tensors and metadata atomically.
pub fn write(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let bytes = serialize(tensors, metadata).map_err(|m| Error::file(path, m))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The canonical safetensors encoding of `tensors` (in this order) and `metadata`.
pub fn serialize(
    tensors: &[(String, HostTensor)],
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("strings serialise"),
        );
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        if name == "__metadata__" || header.contains_key(name) {
            return Err(format!("tensor name '{name}' is reserved or used twice"));
        }
        let want = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
        if t.data.len() != want {
            return Err(format!(
                "tensor {name}: {} bytes of data for shape {:?} of {:?}",
                t.data.len(),
                t.shape,
                t.dtype
            ));
        }
        let end = offset + t.data.len();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": t.dtype.to_string(), "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).expect("a JSON map serialises");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, t) in tensors {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}

/// The upload file format: per tensor NAME, `NAME.idx` (u16, `[R/h, C/w, k]` or `[N/w, k]`),
/// `NAME.codes` (u8, same shape), `NAME.shift` and `NAME.scale` (f32 scalars), `NAME.lookup`
/// (f32 `[bins]`) and optionally `NAME.decoded` (f32, NAME's shape). Metadata: `format`,
/// `chunk`, `topk`, `bins`, `offset`, `range_sigmas`, and per tensor `NAME.shape` (JSON).
pub const UPLOAD_FORMAT: &str = "crusades-upload/1";

/// A named set of compressed tensors: one window's upload.
pub struct Upload {
    pub names: Vec<String>,
    pub tensors: Vec<CompressedTensor>,
}

pub fn write_upload(
    path: &Path,
    upload: &Upload,
    decoded: Option<&[Tensor]>,
    config: &CompressorConfig,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut metadata = extra.clone();
    metadata.insert("format".into(), UPLOAD_FORMAT.into());
    metadata.insert("chunk".into(), config.chunk.to_string());
    metadata.insert("topk".into(), config.topk.to_string());
    metadata.insert("bins".into(), config.bins.to_string());
    metadata.insert("offset".into(), (config.bins / 2).to_string());
    metadata.insert("range_sigmas".into(), config.range_sigmas.to_string());
    let mut out = Vec::new();
    for (i, (name, ct)) in upload.names.iter().zip(&upload.tensors).enumerate() {
        let g = &ct.geometry;
        metadata.insert(
            format!("{name}.shape"),
            serde_json::to_string(&g.shape).expect("ints serialise"),
        );
        let mut wire_shape = g.grid();
        wire_shape.push(ct.k());
        out.push((
            format!("{name}.idx"),
            HostTensor::u16_from(&ct.idx.f_view(wire_shape.as_slice())?)?,
        ));
        out.push((
            format!("{name}.codes"),
            HostTensor::from_tensor(&ct.codes.f_view(wire_shape.as_slice())?)?,
        ));
        out.push((format!("{name}.shift"), HostTensor::from_tensor(&ct.shift)?));
        out.push((format!("{name}.scale"), HostTensor::from_tensor(&ct.scale)?));
        out.push((
            format!("{name}.lookup"),
            HostTensor::from_tensor(&ct.lookup)?,
        ));
        if let Some(d) = decoded {
            out.push((format!("{name}.decoded"), HostTensor::from_tensor(&d[i])?));
        }
    }
    write(path, &out, &metadata)
}

/// Reads and validates an upload file. Returns the upload and the compressor settings it was
/// made with.
pub fn read_upload(path: &Path, device: Device) -> Result<(Upload, CompressorConfig)> {
    let file = read(path, device)?;
    let meta = |key: &str| -> Result<&String> {
        file.metadata.get(key).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "metadata has no '{key}'; is this an upload written by `crusades compress`?"
                ),
            )
        })
    };
    if meta("format")? != UPLOAD_FORMAT {
        return Err(Error::file(
            path,
            format!(
                "format is '{}', expected '{UPLOAD_FORMAT}'",
                meta("format")?
            ),
        ));
    }
    let number = |key: &str| -> Result<f64> {
        meta(key)?
            .parse::<f64>()
            .map_err(|_| Error::file(path, format!("metadata '{key}' is not a number")))
    };
    let config = CompressorConfig {
        chunk: number("chunk")? as i64,
        topk: number("topk")? as i64,
        bins: number("bins")? as i64,
        range_sigmas: number("range_sigmas")?,
    };
    if config.chunk < 1 || !(2..=256).contains(&config.bins) {
        return Err(Error::file(
            path,
            "metadata has an impossible chunk or bins value",
        ));
    }
    let names: Vec<String> = file
        .tensors
        .iter()
        .filter_map(|(n, _)| n.strip_suffix(".idx").map(str::to_string))
        .collect();
    if names.is_empty() {
        return Err(Error::file(path, "holds no upload (no NAME.idx tensors)"));
    }
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let part = |suffix: &str, kind: Option<Kind>| -> Result<Tensor> {
            let t = file.get(&format!("{name}.{suffix}")).ok_or_else(|| {
                Error::file(
                    path,
                    format!("{name} has an index tensor but no {name}.{suffix}"),
                )
            })?;
            if let Some(kind) = kind {
                if t.kind() != kind {
                    return Err(Error::file(
                        path,
                        format!(
                            "{name}.{suffix} has dtype {:?}, expected {kind:?}",
                            t.kind()
                        ),
                    ));
                }
            }
            Ok(t.shallow_clone())
        };
        let shape: Vec<i64> =
            serde_json::from_str(meta(&format!("{name}.shape"))?).map_err(|_| {
                Error::file(
                    path,
                    format!("metadata '{name}.shape' is not a list of integers"),
                )
            })?;
        let geometry = Geometry::new(&shape, config.chunk)
            .map_err(|e| Error::file(path, format!("{name}: {e}")))?;
        let idx = part("idx", None)?;
        if !matches!(idx.kind(), Kind::Int64) || idx.dim() == 0 {
            return Err(Error::file(
                path,
                format!("{name}.idx must be an integer [chunks, k] tensor"),
            ));
        }
        let k = *idx.size().last().expect("idx has at least one dimension");
        let flat = |t: Tensor| t.f_reshape([-1, k.max(1)]);
        let ct = CompressedTensor {
            geometry,
            idx: flat(idx)?,
            codes: flat(part("codes", Some(Kind::Uint8))?)?,
            shift: part("shift", Some(Kind::Float))?,
            scale: part("scale", Some(Kind::Float))?,
            lookup: part("lookup", Some(Kind::Float))?,
        };
        ct.validate(name, config.bins)
            .map_err(|e| Error::file(path, e.to_string()))?;
        tensors.push(ct);
    }
    Ok((Upload { names, tensors }, config))
}
