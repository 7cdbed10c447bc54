//! The registry's ops that pass libtorch a scalar, called through torch-sys.
//!
//! tch 0.24's fallible wrappers of these (`f_add_scalar`, `f_clamp`, `f_fill_`, `f_arange`, …)
//! hand libtorch a temporary `Scalar` that is freed before the call's error is read, and
//! `Scalar`'s destructor unwraps any pending libtorch error: a call that libtorch refuses (an
//! integer tensor scaled in place by a float, a dim out of range for `norm`, a negative
//! `arange`) panics inside tch instead of returning `Err`. Here the error is read first and the
//! scalar freed after. The libtorch functions are the ones tch calls, with the same scalars
//! (a float from an f64, an int from an i64), so results are bit for bit the same.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use tch::{Device, Kind, TchError, Tensor};
use torch_sys::{c_generated, C_scalar, C_tensor};

extern "C" {
    /// The C library's `free`: libtorch's error messages are `strdup`ed.
    fn free(p: *mut c_void);
}

/// A libtorch scalar, freed when dropped: after the call that used it has been checked.
struct Scalar(*mut C_scalar);

impl Scalar {
    fn float(v: f64) -> Self {
        // SAFETY: allocates a scalar (it cannot fail); `Drop` frees it once.
        Scalar(unsafe { torch_sys::ats_float(v) })
    }

    fn int(v: i64) -> Self {
        // SAFETY: as for `float`.
        Scalar(unsafe { torch_sys::ats_int(v) })
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        // SAFETY: made by `ats_float` or `ats_int`, freed only here.
        unsafe { torch_sys::ats_free(self.0) };
        // `ats_free` runs under libtorch's error trap too; leave nothing for the next call.
        let _ = last_error();
    }
}

/// libtorch's pending error, taken (its message freed).
fn last_error() -> Result<(), TchError> {
    // SAFETY: the pointer is null or a C string that libtorch `strdup`ed and handed over.
    unsafe {
        let p: *mut c_char = torch_sys::get_and_reset_last_err();
        if p.is_null() {
            return Ok(());
        }
        let message = CStr::from_ptr(p).to_string_lossy().into_owned();
        free(p.cast());
        Err(TchError::Torch(message))
    }
}

/// One libtorch call that writes a new tensor handle to `out`: the tensor, or its error.
fn call(f: impl FnOnce(*mut *mut C_tensor)) -> Result<Tensor, TchError> {
    let mut out = [ptr::null_mut(); 1];
    f(out.as_mut_ptr());
    last_error()?;
    if out[0].is_null() {
        return Err(TchError::Torch("libtorch returned no tensor".into()));
    }
    // SAFETY: a call that succeeded left a new tensor handle in `out[0]`; it is owned here.
    Ok(unsafe { Tensor::from_ptr(out[0]) })
}

/// The handle libtorch's C API takes. It only reads through it (an in-place op writes the
/// tensor's data, as tch's own wrappers of in-place ops do from the same pointer).
fn at(t: &Tensor) -> *mut C_tensor {
    t.as_ptr().cast_mut()
}

macro_rules! tensor_scalar {
    ($($(#[$doc:meta])* $name:ident => $atg:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(x: &Tensor, s: f64) -> Result<Tensor, TchError> {
            let s = Scalar::float(s);
            // SAFETY: valid handles for the duration of the call.
            call(|out| unsafe { c_generated::$atg(out, at(x), s.0) })
        }
    )*};
}

tensor_scalar! {
    add => atg_add_scalar,
    sub => atg_sub_scalar,
    mul => atg_mul_scalar,
    div => atg_div_scalar,
    pow => atg_pow_tensor_scalar,
    eq => atg_eq,
    ne => atg_ne,
    lt => atg_lt,
    le => atg_le,
    gt => atg_gt,
    ge => atg_ge,
    clamp_min => atg_clamp_min,
    clamp_max => atg_clamp_max,
    full_like => atg_full_like,
    /// In place; returns another handle to `x`.
    add_ => atg_add_scalar_,
    /// In place.
    sub_ => atg_sub_scalar_,
    /// In place.
    mul_ => atg_mul_scalar_,
    /// In place.
    div_ => atg_div_scalar_,
    /// In place.
    clamp_min_ => atg_clamp_min_,
    /// In place.
    clamp_max_ => atg_clamp_max_,
    /// In place.
    fill_ => atg_fill_,
}

pub fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor, TchError> {
    let (lo, hi) = (Scalar::float(lo), Scalar::float(hi));
    // SAFETY: valid handles for the duration of the call.
    call(|out| unsafe { c_generated::atg_clamp(out, at(x), lo.0, hi.0) })
}

/// In place.
pub fn clamp_(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor, TchError> {
    let (lo, hi) = (Scalar::float(lo), Scalar::float(hi));
    // SAFETY: valid handles for the duration of the call.
    call(|out| unsafe { c_generated::atg_clamp_(out, at(x), lo.0, hi.0) })
}

pub fn masked_fill(x: &Tensor, mask: &Tensor, value: f64) -> Result<Tensor, TchError> {
    let v = Scalar::float(value);
    // SAFETY: valid handles for the duration of the call.
    call(|out| unsafe { c_generated::atg_masked_fill(out, at(x), at(mask), v.0) })
}

/// `x` where `cond`, else `other`.
pub fn where_scalar(x: &Tensor, cond: &Tensor, other: f64) -> Result<Tensor, TchError> {
    let o = Scalar::float(other);
    // SAFETY: valid handles for the duration of the call.
    call(|out| unsafe { c_generated::atg_where_scalarother(out, at(cond), at(x), o.0) })
}

pub fn norm(x: &Tensor, p: f64, dims: &[i64], keepdim: bool) -> Result<Tensor, TchError> {
    let p = Scalar::float(p);
    let len = c_int::try_from(dims.len())
        .map_err(|_| TchError::Torch(format!("{} dims is too many", dims.len())))?;
    // SAFETY: valid handles, and `dims` lives across the call.
    call(|out| unsafe {
        c_generated::atg_norm_scalaropt_dim(
            out,
            at(x),
            p.0,
            dims.as_ptr(),
            len,
            c_int::from(keepdim),
        )
    })
}

/// `full(shape, value)`: libtorch's own `full` is `empty` then `fill_`.
pub fn full(shape: &[i64], value: f64, options: (Kind, Device)) -> Result<Tensor, TchError> {
    let t = Tensor::f_empty(shape, options)?;
    let _ = fill_(&t, value)?;
    Ok(t)
}

/// `arange(end)`, with `end` an int scalar as tch makes it.
pub fn arange(end: i64, options: (Kind, Device)) -> Result<Tensor, TchError> {
    // The C API takes the dtype and device as libtorch's numbers: read them off an empty
    // tensor made with `options` rather than restate tch's private mapping.
    let probe = Tensor::f_empty([0], options)?;
    // SAFETY: a valid handle.
    let (kind, device) = unsafe {
        (
            torch_sys::at_scalar_type(at(&probe)),
            torch_sys::at_device(at(&probe)),
        )
    };
    last_error()?;
    let end = Scalar::int(end);
    // SAFETY: a valid scalar for the duration of the call.
    call(|out| unsafe { c_generated::atg_arange(out, end.0, kind, device) })
}
