//! Building C and C++ into shared objects with the `cc` crate (at test
//! time: a build script would link them into the plugin), and loading the
//! C shim that gives the host its variadic suite functions.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::ofx::*;
use super::params::ShimValue;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host")
}

/// Where built objects go: beside the test binary (target/<profile>/).
fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("ofx-test-host");
    std::fs::create_dir_all(&dir).expect("create the build folder");
    dir
}

/// Compiles `sources` (C, or C++ with `cpp`) into the shared object `name`
/// with the OpenFX headers on the include path, and returns its path.
pub fn shared_object(name: &str, sources: &[PathBuf], cpp: bool) -> PathBuf {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut build = cc::Build::new();
    build
        .cpp(cpp)
        .target(&target)
        .host(&target)
        .opt_level(1)
        .debug(false)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .pic(true)
        .out_dir(out_dir())
        .include(here().join("examples/include"));
    let compiler = build.try_get_compiler().expect("a C/C++ compiler");
    let out = out_dir().join(name);
    let mut cmd = compiler.to_command();
    cmd.arg("-shared").arg("-o").arg(&out).args(sources);
    let o = cmd.output().expect("run the compiler");
    assert!(
        o.status.success(),
        "compiling {name} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

type GetValue = unsafe extern "C" fn(OfxParamHandle, ...) -> OfxStatus;
type GetValueAtTime = unsafe extern "C" fn(OfxParamHandle, OfxTime, ...) -> OfxStatus;
type GetIntegral = unsafe extern "C" fn(OfxParamHandle, OfxTime, OfxTime, ...) -> OfxStatus;
type Message = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    *const c_char,
    *const c_char,
    ...
) -> OfxStatus;

/// `ShimCallbacks` in shim.c.
#[repr(C)]
struct Callbacks {
    layout: unsafe extern "C" fn(OfxParamHandle, *mut c_int, *mut c_int) -> OfxStatus,
    get: unsafe extern "C" fn(OfxParamHandle, c_int, f64, *mut *mut c_void, c_int) -> OfxStatus,
    set: unsafe extern "C" fn(OfxParamHandle, c_int, f64, *const ShimValue, c_int) -> OfxStatus,
    message: unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        *const c_char,
        *const c_char,
        c_int,
    ) -> OfxStatus,
}

/// The shim's variadic functions, for the suite tables.
pub struct Shim {
    pub param_get_value: GetValue,
    pub param_get_value_at_time: GetValueAtTime,
    pub param_get_derivative: GetValueAtTime,
    pub param_get_integral: GetIntegral,
    pub param_set_value: GetValue,
    pub param_set_value_at_time: GetValueAtTime,
    pub message: Message,
    pub set_persistent_message: Message,
}

/// Builds and loads the shim once per process, wired to this host.
pub fn shim() -> &'static Shim {
    static SHIM: OnceLock<Shim> = OnceLock::new();
    SHIM.get_or_init(|| {
        let so = shared_object("libofxhostshim.so", &[here().join("shim.c")], false);
        // SAFETY: our own library, kept loaded for the process.
        let lib: &'static libloading::Library = Box::leak(Box::new(
            unsafe { libloading::Library::new(&so) }.expect("load the shim"),
        ));
        // SAFETY: the symbols have these C types (shim.c).
        unsafe {
            let install = lib
                .get::<unsafe extern "C" fn(*const Callbacks)>(b"shim_install")
                .expect("shim_install");
            let cb = Callbacks {
                layout: super::params::shim_layout,
                get: super::params::shim_get,
                set: super::params::shim_set,
                message: super::suites::shim_message,
            };
            install(&cb);
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).expect(stringify!($name))
                };
            }
            Shim {
                param_get_value: sym!(b"shim_paramGetValue"),
                param_get_value_at_time: sym!(b"shim_paramGetValueAtTime"),
                param_get_derivative: sym!(b"shim_paramGetDerivative"),
                param_get_integral: sym!(b"shim_paramGetIntegral"),
                param_set_value: sym!(b"shim_paramSetValue"),
                param_set_value_at_time: sym!(b"shim_paramSetValueAtTime"),
                message: sym!(b"shim_message"),
                set_persistent_message: sym!(b"shim_setPersistentMessage"),
            }
        }
    })
}

/// The OpenFX association's example plugins (vendored under examples/),
/// built once per process.
pub fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let src = match name {
        "invert" => "examples/Invert/invert.cpp",
        "basic" => "examples/Basic/basic.cpp",
        other => panic!("no example {other}"),
    };
    let p = shared_object(&format!("{name}.ofx"), &[here().join(src)], true);
    built.push((name.to_string(), p.clone()));
    p
}
