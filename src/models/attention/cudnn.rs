//! Attention by cuDNN's fused SDPA forward (the single-node "unified"
//! `OPERATION_SDPA_FWD`, cuDNN >= 9.13.1) through the backend API.
//!
//! cuDNN is loaded at run time (`libcudnn.so.9`, or the file
//! `COGVIDEO_CUDNN` names), never linked: a library built with `cuda` must
//! load and run where cuDNN is missing or too old, with the chunked path.
//! The enum values below are those of cuDNN 9's `cudnn_graph_v9.h`; the
//! backend API keeps them stable across 9.x.
//!
//! Tensors stay token-major `[B, S, H, Dh]`; cuDNN is told the logical
//! `[B, H, S, Dh]` shape with the matching strides, so nothing is
//! transposed. Plans are built once per device and shape and cached, as
//! are refusals (a shape cuDNN has no engine for runs the chunked path).

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::backend;

type Descriptor = *mut c_void;
type Handle = *mut c_void;

// cudnnBackendDescriptorType_t
const TENSOR_DESCRIPTOR: u32 = 17;
const OPERATIONGRAPH_DESCRIPTOR: u32 = 15;
const ENGINEHEUR_DESCRIPTOR: u32 = 4;
const ENGINECFG_DESCRIPTOR: u32 = 3;
const EXECUTION_PLAN_DESCRIPTOR: u32 = 5;
const VARIANT_PACK_DESCRIPTOR: u32 = 16;
const OPERATION_SDPA_FWD_DESCRIPTOR: u32 = 41;
// cudnnBackendAttributeName_t
const ATTR_ENGINEHEUR_MODE: u32 = 200;
const ATTR_ENGINEHEUR_OPERATION_GRAPH: u32 = 201;
const ATTR_ENGINEHEUR_RESULTS: u32 = 202;
const ATTR_EXECUTION_PLAN_HANDLE: u32 = 400;
const ATTR_EXECUTION_PLAN_ENGINE_CONFIG: u32 = 401;
const ATTR_EXECUTION_PLAN_WORKSPACE_SIZE: u32 = 402;
const ATTR_OPERATIONGRAPH_HANDLE: u32 = 800;
const ATTR_OPERATIONGRAPH_OPS: u32 = 801;
const ATTR_TENSOR_BYTE_ALIGNMENT: u32 = 900;
const ATTR_TENSOR_DATA_TYPE: u32 = 901;
const ATTR_TENSOR_DIMENSIONS: u32 = 902;
const ATTR_TENSOR_STRIDES: u32 = 903;
const ATTR_TENSOR_UNIQUE_ID: u32 = 906;
const ATTR_TENSOR_IS_BY_VALUE: u32 = 908;
const ATTR_VARIANT_PACK_UNIQUE_IDS: u32 = 1000;
const ATTR_VARIANT_PACK_DATA_POINTERS: u32 = 1001;
const ATTR_VARIANT_PACK_WORKSPACE: u32 = 1003;
const ATTR_SDPA_FWD_QDESC: u32 = 2800;
const ATTR_SDPA_FWD_KDESC: u32 = 2801;
const ATTR_SDPA_FWD_VDESC: u32 = 2802;
const ATTR_SDPA_FWD_ODESC: u32 = 2803;
const ATTR_SDPA_FWD_SCALEDESC: u32 = 2805;
// cudnnBackendAttributeType_t
const TYPE_HANDLE: u32 = 0;
const TYPE_DATA_TYPE: u32 = 1;
const TYPE_BOOLEAN: u32 = 2;
const TYPE_INT64: u32 = 3;
const TYPE_VOID_PTR: u32 = 6;
const TYPE_HEUR_MODE: u32 = 8;
const TYPE_BACKEND_DESCRIPTOR: u32 = 15;
// cudnnDataType_t
const DATA_FLOAT: u32 = 0;
const DATA_HALF: u32 = 2;
const DATA_BFLOAT16: u32 = 9;
// cudnnBackendHeurMode_t, in the order cudnn-frontend tries them.
const HEUR_MODES: [(u32, &str); 3] = [(3, "A"), (1, "B"), (2, "fallback")];

const UID_Q: i64 = 1;
const UID_K: i64 = 2;
const UID_V: i64 = 3;
const UID_O: i64 = 4;
const UID_SCALE: i64 = 5;

/// Tensors passed to cuDNN are aligned to this many bytes (cudarc's
/// allocations are; a view at another offset is copied first).
const ALIGNMENT: usize = 16;

/// The entry points we use, resolved once from the loaded library.
struct Library {
    _lib: libloading::Library,
    version: String,
    create: unsafe extern "C" fn(*mut Handle) -> i32,
    set_stream: unsafe extern "C" fn(Handle, *mut c_void) -> i32,
    create_descriptor: unsafe extern "C" fn(u32, *mut Descriptor) -> i32,
    destroy_descriptor: unsafe extern "C" fn(Descriptor) -> i32,
    set_attribute: unsafe extern "C" fn(Descriptor, u32, u32, i64, *const c_void) -> i32,
    get_attribute: unsafe extern "C" fn(Descriptor, u32, u32, i64, *mut i64, *mut c_void) -> i32,
    finalize: unsafe extern "C" fn(Descriptor) -> i32,
    execute: unsafe extern "C" fn(Handle, Descriptor, Descriptor) -> i32,
    last_error: unsafe extern "C" fn(*mut c_char, usize),
}

fn load_library() -> std::result::Result<Library, String> {
    let name = std::env::var_os("COGVIDEO_CUDNN").unwrap_or_else(|| "libcudnn.so.9".into());
    // SAFETY: loading cuDNN runs its initialisers, which have no
    // preconditions; every symbol is given the signature of cuDNN 9's
    // headers (enums as u32, statuses as i32: the same C ABI).
    unsafe {
        let lib = libloading::Library::new(&name)
            .map_err(|e| format!("cuDNN not found: {}", one_line(&e.to_string())))?;
        let version: unsafe extern "C" fn() -> usize = *lib
            .get(b"cudnnGetVersion\0")
            .map_err(|e| format!("cuDNN unusable: {e}"))?;
        let version = backend::check_cudnn_version(version())?;
        macro_rules! sym {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes())
                    .map_err(|e| format!("cuDNN {version} unusable: {e}"))?
            };
        }
        Ok(Library {
            create: sym!("cudnnCreate"),
            set_stream: sym!("cudnnSetStream"),
            create_descriptor: sym!("cudnnBackendCreateDescriptor"),
            destroy_descriptor: sym!("cudnnBackendDestroyDescriptor"),
            set_attribute: sym!("cudnnBackendSetAttribute"),
            get_attribute: sym!("cudnnBackendGetAttribute"),
            finalize: sym!("cudnnBackendFinalize"),
            execute: sym!("cudnnBackendExecute"),
            last_error: sym!("cudnnGetLastErrorString"),
            version,
            _lib: lib,
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn library() -> std::result::Result<&'static Library, &'static str> {
    static LIB: OnceLock<std::result::Result<Library, String>> = OnceLock::new();
    LIB.get_or_init(load_library)
        .as_ref()
        .map_err(String::as_str)
}

/// The cuDNN version found ("9.13.1"), or why it cannot be used.
pub(super) fn status() -> std::result::Result<String, String> {
    library().map(|l| l.version.clone()).map_err(str::to_owned)
}

fn check(lib: &Library, status: i32, what: &str) -> std::result::Result<(), String> {
    if status == 0 {
        return Ok(());
    }
    let mut buf = [0 as c_char; 512];
    // SAFETY: cuDNN writes at most `buf.len()` bytes, NUL-terminated.
    let detail = unsafe {
        (lib.last_error)(buf.as_mut_ptr(), buf.len());
        std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy()
    };
    Err(format!(
        "{what}: cuDNN status {status} {}",
        one_line(&detail)
    ))
}

/// An owned backend descriptor.
struct Desc {
    lib: &'static Library,
    raw: Descriptor,
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnBackendCreateDescriptor, destroyed once.
        unsafe { (self.lib.destroy_descriptor)(self.raw) };
    }
}

type Plain<T> = std::result::Result<T, String>;

impl Desc {
    fn new(lib: &'static Library, kind: u32) -> Plain<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: cuDNN writes the new descriptor into `raw`.
        check(
            lib,
            unsafe { (lib.create_descriptor)(kind, &mut raw) },
            "create descriptor",
        )?;
        Ok(Self { lib, raw })
    }

    fn set<T>(&self, name: u32, kind: u32, values: &[T]) -> Plain<()> {
        // SAFETY: `values` holds `len` elements of the C type `kind` names.
        let st = unsafe {
            (self.lib.set_attribute)(
                self.raw,
                name,
                kind,
                values.len() as i64,
                values.as_ptr() as *const c_void,
            )
        };
        check(self.lib, st, &format!("set attribute {name}"))
    }

    fn set_descs(&self, name: u32, descs: &[&Desc]) -> Plain<()> {
        let raw: Vec<Descriptor> = descs.iter().map(|d| d.raw).collect();
        self.set(name, TYPE_BACKEND_DESCRIPTOR, &raw)
    }

    fn finalize(self, what: &str) -> Plain<Self> {
        // SAFETY: a live descriptor.
        check(self.lib, unsafe { (self.lib.finalize)(self.raw) }, what)?;
        Ok(self)
    }
}

/// A `[B, H, S, D]` tensor stored token-major `[B, S, H, D]`.
fn bshd(lib: &'static Library, uid: i64, dtype: u32, [b, h, s, d]: [i64; 4]) -> Plain<Desc> {
    let t = Desc::new(lib, TENSOR_DESCRIPTOR)?;
    t.set(ATTR_TENSOR_DATA_TYPE, TYPE_DATA_TYPE, &[dtype])?;
    t.set(ATTR_TENSOR_DIMENSIONS, TYPE_INT64, &[b, h, s, d])?;
    t.set(ATTR_TENSOR_STRIDES, TYPE_INT64, &[s * h * d, d, h * d, 1])?;
    t.set(ATTR_TENSOR_UNIQUE_ID, TYPE_INT64, &[uid])?;
    t.set(ATTR_TENSOR_BYTE_ALIGNMENT, TYPE_INT64, &[ALIGNMENT as i64])?;
    t.finalize("tensor descriptor")
}

/// The attention scale, passed by value from the host.
fn scalar(lib: &'static Library, uid: i64) -> Plain<Desc> {
    let t = Desc::new(lib, TENSOR_DESCRIPTOR)?;
    t.set(ATTR_TENSOR_DATA_TYPE, TYPE_DATA_TYPE, &[DATA_FLOAT])?;
    t.set(ATTR_TENSOR_DIMENSIONS, TYPE_INT64, &[1i64, 1, 1, 1])?;
    t.set(ATTR_TENSOR_STRIDES, TYPE_INT64, &[1i64, 1, 1, 1])?;
    t.set(ATTR_TENSOR_UNIQUE_ID, TYPE_INT64, &[uid])?;
    t.set(ATTR_TENSOR_BYTE_ALIGNMENT, TYPE_INT64, &[ALIGNMENT as i64])?;
    t.set(ATTR_TENSOR_IS_BY_VALUE, TYPE_BOOLEAN, &[true])?;
    t.finalize("scale descriptor")
}

/// A finalized execution plan; the descriptors it was built from live as
/// long as it does.
struct Plan {
    plan: Desc,
    workspace: usize,
    _keep: Vec<Desc>,
}

// SAFETY: a plan is only used under its device's mutex.
unsafe impl Send for Plan {}
unsafe impl Sync for Plan {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dtype: u32,
    b: usize,
    h: usize,
    sq: usize,
    sk: usize,
    d: usize,
}

fn build_plan(lib: &'static Library, handle: Handle, key: Key) -> Plain<Plan> {
    let [b, h, sq, sk, d] = [key.b, key.h, key.sq, key.sk, key.d].map(|x| x as i64);
    let q = bshd(lib, UID_Q, key.dtype, [b, h, sq, d])?;
    let k = bshd(lib, UID_K, key.dtype, [b, h, sk, d])?;
    let v = bshd(lib, UID_V, key.dtype, [b, h, sk, d])?;
    let o = bshd(lib, UID_O, key.dtype, [b, h, sq, d])?;
    let scale = scalar(lib, UID_SCALE)?;
    let op = Desc::new(lib, OPERATION_SDPA_FWD_DESCRIPTOR)?;
    op.set_descs(ATTR_SDPA_FWD_QDESC, &[&q])?;
    op.set_descs(ATTR_SDPA_FWD_KDESC, &[&k])?;
    op.set_descs(ATTR_SDPA_FWD_VDESC, &[&v])?;
    op.set_descs(ATTR_SDPA_FWD_ODESC, &[&o])?;
    op.set_descs(ATTR_SDPA_FWD_SCALEDESC, &[&scale])?;
    let op = op.finalize("SDPA forward node")?;
    let graph = Desc::new(lib, OPERATIONGRAPH_DESCRIPTOR)?;
    graph.set_descs(ATTR_OPERATIONGRAPH_OPS, &[&op])?;
    graph.set(ATTR_OPERATIONGRAPH_HANDLE, TYPE_HANDLE, &[handle])?;
    let graph = graph.finalize("operation graph")?;

    let mut last = "no engine configuration".to_string();
    for (mode, mode_name) in HEUR_MODES {
        let heur = Desc::new(lib, ENGINEHEUR_DESCRIPTOR)?;
        heur.set_descs(ATTR_ENGINEHEUR_OPERATION_GRAPH, &[&graph])?;
        heur.set(ATTR_ENGINEHEUR_MODE, TYPE_HEUR_MODE, &[mode])?;
        let heur = match heur.finalize("engine heuristics") {
            Ok(h) => h,
            Err(e) => {
                last = format!("heuristics {mode_name}: {e}");
                continue;
            }
        };
        const MAX_CONFIGS: usize = 8;
        let configs = (0..MAX_CONFIGS)
            .map(|_| Desc::new(lib, ENGINECFG_DESCRIPTOR))
            .collect::<Plain<Vec<_>>>()?;
        let mut raw: Vec<Descriptor> = configs.iter().map(|c| c.raw).collect();
        let mut count = 0i64;
        // SAFETY: `raw` holds MAX_CONFIGS created engine-config descriptors
        // for cuDNN to fill; it reports how many it filled in `count`.
        let st = unsafe {
            (lib.get_attribute)(
                heur.raw,
                ATTR_ENGINEHEUR_RESULTS,
                TYPE_BACKEND_DESCRIPTOR,
                MAX_CONFIGS as i64,
                &mut count,
                raw.as_mut_ptr() as *mut c_void,
            )
        };
        if let Err(e) = check(lib, st, "heuristic results") {
            last = format!("heuristics {mode_name}: {e}");
            continue;
        }
        let mut found = None;
        for config in configs
            .iter()
            .take((count.max(0) as usize).min(MAX_CONFIGS))
        {
            let plan = Desc::new(lib, EXECUTION_PLAN_DESCRIPTOR)?;
            plan.set(ATTR_EXECUTION_PLAN_HANDLE, TYPE_HANDLE, &[handle])?;
            plan.set_descs(ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &[config])?;
            match plan.finalize("execution plan") {
                Ok(p) => {
                    found = Some(p);
                    break;
                }
                Err(e) => last = format!("heuristics {mode_name}: {e}"),
            }
        }
        let Some(plan) = found else {
            continue;
        };
        let (mut workspace, mut n) = (0i64, 0i64);
        // SAFETY: one INT64 into `workspace`.
        let st = unsafe {
            (lib.get_attribute)(
                plan.raw,
                ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                TYPE_INT64,
                1,
                &mut n,
                &mut workspace as *mut i64 as *mut c_void,
            )
        };
        check(lib, st, "workspace size")?;
        let mut keep = vec![q, k, v, o, scale, op, graph, heur];
        keep.extend(configs);
        return Ok(Plan {
            plan,
            workspace: workspace.max(0) as usize,
            _keep: keep,
        });
    }
    Err(last)
}

/// One device's cuDNN handle and plans. cuDNN handles are not thread-safe,
/// so plans are built and run under the devices' lock.
struct DeviceState {
    handle: Handle,
    plans: HashMap<Key, std::result::Result<Arc<Plan>, String>>,
}

// SAFETY: the handle is only used under the mutex that holds it.
unsafe impl Send for DeviceState {}

/// Each device's state, or why cuDNN cannot run there (see
/// [`backend::device_state`]).
type Devices = HashMap<usize, std::result::Result<DeviceState, String>>;

fn devices() -> &'static Mutex<Devices> {
    static DEVICES: OnceLock<Mutex<Devices>> = OnceLock::new();
    DEVICES.get_or_init(Default::default)
}

/// Shapes refused so far, for the description a pipeline reports.
fn refused() -> &'static Mutex<Vec<String>> {
    static REFUSED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    REFUSED.get_or_init(Default::default)
}

/// The first shape (or device) cuDNN refused and how many more, if any.
pub(super) fn refusals() -> Option<String> {
    let list = refused().lock().unwrap_or_else(|e| e.into_inner());
    let first = list.first()?;
    Some(match list.len() {
        1 => first.clone(),
        n => format!("{first} (and {} more)", n - 1),
    })
}

fn ordinal(t: &Tensor) -> usize {
    match t.device().location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
        _ => 0,
    }
}

/// Runs `f` with the device's state, made on first use: the device's
/// context bound to this thread, the handle on this thread's stream
/// (candle uses per-thread streams). If binding, `cudnnCreate` or
/// `cudnnSetStream` fails, cuDNN is unusable on the device from then on
/// (reported once in [`refusals`]) and every call is an error, which
/// [`attention`] turns into the chunked path.
fn with_device<R>(
    dev: &candle_core::CudaDevice,
    ordinal: usize,
    f: impl FnOnce(&'static Library, &mut DeviceState) -> Plain<R>,
) -> Plain<R> {
    let lib = library().map_err(str::to_owned)?;
    let stream = dev.cuda_stream();
    let bind = || {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| format!("binding the CUDA context: {e}"))
    };
    let mut devices = devices().lock().unwrap_or_else(|e| e.into_inner());
    let setup = || {
        bind()?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: cuDNN writes a new handle for the current context.
        check(lib, unsafe { (lib.create)(&mut handle) }, "cudnnCreate")?;
        Ok(DeviceState {
            handle,
            plans: HashMap::new(),
        })
    };
    let each_use = |state: &mut DeviceState| {
        bind()?;
        // SAFETY: a live handle and the device's own stream.
        let st = unsafe { (lib.set_stream)(state.handle, stream.cu_stream() as *mut c_void) };
        check(lib, st, "cudnnSetStream")
    };
    match backend::device_state(&mut devices, ordinal, setup, each_use) {
        Ok(state) => f(lib, state),
        Err(why) => {
            let why = why.map_or_else(
                || format!("cuDNN unusable on CUDA device {ordinal}"),
                |why| {
                    let why = format!("CUDA device {ordinal}: {why}");
                    note(why.clone());
                    why
                },
            );
            Err(why)
        }
    }
}

/// The cached plan for `key`, built on first use; `Ok(None)` when cuDNN has
/// no engine for the shape (remembered, and listed in [`refusals`]).
fn plan_for(dev: &candle_core::CudaDevice, ordinal: usize, key: Key) -> Plain<Option<Arc<Plan>>> {
    with_device(dev, ordinal, |lib, state| {
        if let Some(p) = state.plans.get(&key) {
            return Ok(p.as_ref().ok().cloned());
        }
        let built = build_plan(lib, state.handle, key).map(Arc::new);
        if let Err(e) = &built {
            note_refusal(key, e);
        }
        state.plans.insert(key, built.clone());
        Ok(built.ok())
    })
}

/// A tensor whose data starts at an aligned offset of its own buffer, as
/// the plans promise cuDNN.
fn aligned(t: &Tensor) -> Result<Tensor> {
    backend::start_aligned(t, ALIGNMENT)
}

/// `softmax(q k^T * scale) v` by cuDNN, for [`super::scaled_dot_product_attention`]
/// once [`backend::gpu_backend`] picked cuDNN: `Ok(None)` when `q` is not on
/// a GPU or cuDNN has no plan for the shape (the caller then runs the
/// chunked path).
pub(super) fn attention(
    q: &Tensor,
    kv: &[(&Tensor, &Tensor)],
    scale: f64,
) -> Result<Option<Tensor>> {
    let candle_core::Device::Cuda(dev) = q.device() else {
        return Ok(None);
    };
    let (b, sq, h, d) = q.dims4()?;
    // The head sizes cuDNN's SDPA engines take.
    if d == 0 || d > 256 || !d.is_multiple_of(8) {
        return Ok(None);
    }
    let join = |i: usize| -> Result<Tensor> {
        let parts: Vec<&Tensor> = kv.iter().map(|p| if i == 0 { p.0 } else { p.1 }).collect();
        match parts.as_slice() {
            [one] => aligned(one),
            _ => aligned(&Tensor::cat(&parts, 1)?),
        }
    };
    let (k, v) = (join(0)?, join(1)?);
    let sk = k.dim(1)?;
    if k.dims() != [b, sk, h, d] || v.dims() != k.dims() || k.dtype() != q.dtype() {
        candle_core::bail!(
            "attention: keys {:?} and values {:?} do not fit queries {:?}",
            k.shape(),
            v.shape(),
            q.shape()
        );
    }
    let key = Key {
        dtype: if q.dtype() == DType::BF16 {
            DATA_BFLOAT16
        } else {
            DATA_HALF
        },
        b,
        h,
        sq,
        sk,
        d,
    };
    // An error here is cuDNN unusable on the device (already reported).
    let Some(plan) = plan_for(dev, ordinal(q), key).ok().flatten() else {
        return Ok(None);
    };
    let op = Sdpa {
        plan,
        key,
        ordinal: ordinal(q),
        scale: scale as f32,
    };
    match aligned(q)?.apply_op3_no_bwd(&k, &v, &op) {
        Ok(out) => Ok(Some(out)),
        // A plan that builds but does not run is refused from now on: the
        // chunked path is slower, but a call that works beats one that fails.
        Err(e) => {
            refuse(dev, ordinal(q), key, format!("execution failed: {e}"));
            Ok(None)
        }
    }
}

/// Marks `key` as refused on the device, so later calls go to the chunked
/// path at once.
fn refuse(dev: &candle_core::CudaDevice, ordinal: usize, key: Key, why: String) {
    note_refusal(key, &why);
    let _ = with_device(dev, ordinal, |_, state| {
        state.plans.insert(key, Err(why));
        Ok(())
    });
}

fn note_refusal(key: Key, why: &str) {
    note(format!(
        "[B {}, H {}, Sq {}, Sk {}, D {}]: {why}",
        key.b, key.h, key.sq, key.sk, key.d
    ));
}

fn note(refusal: String) {
    refused()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(refusal);
}

struct Sdpa {
    plan: Arc<Plan>,
    key: Key,
    ordinal: usize,
    scale: f32,
}

impl Sdpa {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        (q, lq): (&CudaStorage, &Layout),
        (k, lk): (&CudaStorage, &Layout),
        (v, lv): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let dev = q.device().clone();
        let stream = dev.cuda_stream();
        let Key { b, h, sq, d, .. } = self.key;
        let q = q.as_cuda_slice::<T>()?.slice(lq.start_offset()..);
        let k = k.as_cuda_slice::<T>()?.slice(lk.start_offset()..);
        let v = v.as_cuda_slice::<T>()?.slice(lv.start_offset()..);
        // SAFETY: cuDNN writes every element of the output.
        let out = unsafe { dev.alloc::<T>(b * sq * h * d) }?;
        // SAFETY: a scratch buffer only cuDNN touches.
        let workspace = unsafe { dev.alloc::<u8>(self.plan.workspace.max(1)) }?;
        {
            let (qp, _q) = q.device_ptr(&stream);
            let (kp, _k) = k.device_ptr(&stream);
            let (vp, _v) = v.device_ptr(&stream);
            let (op, _o) = out.device_ptr(&stream);
            let (wp, _w) = workspace.device_ptr(&stream);
            let scale = self.scale;
            let pointers: [*mut c_void; 5] = [
                qp as *mut c_void,
                kp as *mut c_void,
                vp as *mut c_void,
                op as *mut c_void,
                &scale as *const f32 as *mut c_void,
            ];
            with_device(&dev, self.ordinal, |lib, state| {
                let pack = Desc::new(lib, VARIANT_PACK_DESCRIPTOR)?;
                pack.set(
                    ATTR_VARIANT_PACK_UNIQUE_IDS,
                    TYPE_INT64,
                    &[UID_Q, UID_K, UID_V, UID_O, UID_SCALE],
                )?;
                pack.set(ATTR_VARIANT_PACK_DATA_POINTERS, TYPE_VOID_PTR, &pointers)?;
                pack.set(
                    ATTR_VARIANT_PACK_WORKSPACE,
                    TYPE_VOID_PTR,
                    &[wp as *mut c_void],
                )?;
                let pack = pack.finalize("variant pack")?;
                // SAFETY: the plan was built on this handle for these shapes;
                // the pointers are live device buffers of those shapes (and
                // the host scale) until the launch has been enqueued.
                let st = unsafe { (lib.execute)(state.handle, self.plan.plan.raw, pack.raw) };
                check(lib, st, "cudnnBackendExecute")
            })
            .map_err(candle_core::Error::msg)?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((b, sq, h, d)),
        ))
    }
}

impl CustomOp3 for Sdpa {
    fn name(&self) -> &'static str {
        "cudnn-sdpa"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("cuDNN attention runs on CUDA tensors only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        lq: &Layout,
        k: &CudaStorage,
        lk: &Layout,
        v: &CudaStorage,
        lv: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match q.dtype() {
            DType::BF16 => self.run::<half::bf16>((q, lq), (k, lk), (v, lv)),
            DType::F16 => self.run::<half::f16>((q, lq), (k, lk), (v, lv)),
            other => candle_core::bail!("cuDNN attention takes bf16 or f16, got {other:?}"),
        }
    }
}
