//! An OpenFX host for tests: it loads a plugin binary, gives it the
//! property, image effect, parameter, memory, multithread, message and
//! progress suites, and drives its actions as a compositor would, checking
//! every handle the plugin passes back and noting what goes against the
//! standard (`violations`).
//!
//! What a test controls: the images' depth (8-bit, 16-bit, float RGBA) and
//! row layout (padding, negative row bytes), the render scale, interactive
//! or final renders, an abort flag (raised by the test or at the Nth
//! progress update), temporal access (full, MLT's "the current image for any
//! time", none), images fetched outside a render, and host profiles read
//! from hosts we cannot run: HostSupport's closed parameter property sets
//! (and properties refused on request), Natron's `NatronOfxHostIsNatron`
//! and its late progress bar (`ReplyNo` until it exists), Resolve's
//! thumbnail flag on a render's Source clip. Images are given on
//! the render's own thread and the threads of the multithread suite (a
//! plugin's own threads get none, as a render's images belong to it).
//! Parameters hold one value (no animation); the variadic suite functions
//! come from a C shim (shim.c) built with the `cc` crate.

pub mod compile;
pub mod image;
mod ofx;
pub mod params;
pub mod props;
pub mod registry;
mod suites;

use std::ffi::{CStr, CString, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use image::{Buffer, Depth, Layout, Pixels};
pub use ofx::*;
pub use props::{PropSet, Value};
use props::{s, string};
use registry::Kind;

/// Whether and how a plugin may fetch source images at other times than
/// the one rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temporal {
    /// Any time in the clip's range (the host declares temporal access).
    Full,
    /// The current image whatever time is asked, as MLT does.
    CurrentOnly,
    /// Other times fail.
    None,
}

#[derive(Clone, Debug)]
pub struct HostConfig {
    pub name: &'static str,
    pub temporal: Temporal,
    /// Source images may be fetched outside a render call (off in most
    /// hosts: images belong to a render).
    pub images_outside_render: bool,
    pub contexts: Vec<&'static CStr>,
    /// Parameter descriptors hold HostSupport's properties and refuse any
    /// other (Natron's host layer is a fork of HostSupport).
    pub hostsupport: bool,
    /// The host says it is Natron (`NatronOfxHostIsNatron`, set in Natron's
    /// `Engine/OfxHost.cpp`, `OfxHost::OfxHost`).
    pub natron: bool,
    /// Natron's GUI: `progressStart` on a render thread is queued to the
    /// main thread, and until the bar exists `ProgressPanel::updateTask`
    /// finds no task and returns false (NatronGitHub/Natron RB-2.5,
    /// `Gui/ProgressPanel.cpp`, `updateTask`: `if (!foundTask) return false`),
    /// which HostSupport's `ProgressUpdate` answers as `kOfxStatReplyNo`
    /// (`HostSupport/src/ofxhImageEffect.cpp` line 3961). This many updates
    /// after each start, and every update with no bar started, answer
    /// `ReplyNo`.
    pub late_progress: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            name: "org.cogvideo.TestHost",
            temporal: Temporal::Full,
            images_outside_render: false,
            contexts: vec![
                kOfxImageEffectContextFilter,
                kOfxImageEffectContextGeneral,
                kOfxImageEffectContextGenerator,
            ],
            hostsupport: false,
            natron: false,
            late_progress: 0,
        }
    }
}

/// What the plugin did through the suites, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Name, version and whether the host has it.
    Suite(String, i32, bool),
    Message {
        effect: usize,
        persistent: bool,
        kind: String,
        id: String,
        text: String,
    },
    ClearMessage(usize),
    ProgressStart(usize, String),
    ProgressUpdate(usize, f64),
    ProgressEnd(usize),
    /// An image fetch: the clip, the time asked, the render's time (`None`
    /// outside a render) and whether an image was given.
    Fetch {
        effect: usize,
        clip: String,
        time: f64,
        render_time: Option<f64>,
        served: bool,
    },
}

impl Event {
    fn effect(&self) -> Option<usize> {
        match self {
            Event::Suite(..) => None,
            Event::Message { effect, .. } | Event::Fetch { effect, .. } => Some(*effect),
            Event::ClearMessage(e)
            | Event::ProgressStart(e, _)
            | Event::ProgressUpdate(e, _)
            | Event::ProgressEnd(e) => Some(*e),
        }
    }
}

/// State of one loaded binary's host, reachable from every handle.
pub struct Shared {
    pub config: HostConfig,
    events: Mutex<Vec<Event>>,
}

impl Shared {
    fn record(&self, ev: Event) {
        self.events.lock().unwrap().push(ev);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// A source clip's frames: `(time, render scale)` to pixels, or `None`
/// where there is no frame.
pub type SourceFn = Arc<dyn Fn(f64, f64) -> Option<Pixels> + Send + Sync>;

/// How an instance's clips look.
#[derive(Clone)]
pub struct Setup {
    pub depth: Depth,
    pub layout: Layout,
    /// Full-resolution frame size (the project size).
    pub size: (usize, usize),
    pub fps: f64,
    /// First and last frame of the clips.
    pub frame_range: (f64, f64),
    /// The `Source` clip's frames (filters); `None` leaves it unconnected.
    pub source: Option<SourceFn>,
    pub interactive: bool,
}

/// A clip of a descriptor or an instance.
pub struct Clip {
    pub name: String,
    pub props: Box<PropSet>,
    /// The owning effect's handle.
    pub effect: usize,
    pub source: Option<SourceFn>,
}

impl Clip {
    fn new(name: &str, effect: usize) -> Box<Clip> {
        let c = Box::new(Clip {
            name: name.to_string(),
            props: PropSet::new(&format!("clip {name}")),
            effect,
            source: None,
        });
        registry::add(c.handle() as usize, Kind::Clip);
        c
    }

    pub fn handle(&self) -> OfxImageClipHandle {
        self as *const Clip as OfxImageClipHandle
    }
}

impl Drop for Clip {
    fn drop(&mut self) {
        registry::remove(self.handle() as usize);
    }
}

/// An image effect descriptor or instance.
pub struct Effect {
    pub props: Box<PropSet>,
    pub params: Box<params::ParamSet>,
    // Boxed: a clip's address is its handle and must not move.
    #[allow(clippy::vec_box)]
    pub clips: Mutex<Vec<Box<Clip>>>,
    pub descriptor: bool,
    /// Instances only.
    pub setup: Option<Setup>,
    pub abort: AtomicBool,
    pub abort_polls: AtomicUsize,
    /// Raise `abort` at this progress update (1-based).
    pub abort_on_update: Mutex<Option<usize>>,
    pub abort_raised: Mutex<Option<Instant>>,
    pub progress_updates: AtomicUsize,
    /// Whether a progress bar is started, and the updates since it was.
    pub progress_bar: Mutex<Option<usize>>,
    /// Images given and not released yet; images given in all.
    pub live_images: Arc<AtomicIsize>,
    pub fetched: AtomicUsize,
    pub shared: Arc<Shared>,
}

impl Effect {
    fn new(
        descriptor: bool,
        setup: Option<Setup>,
        params: Box<params::ParamSet>,
        shared: Arc<Shared>,
    ) -> Box<Effect> {
        let e = Box::new(Effect {
            props: PropSet::new(if descriptor {
                "effect descriptor"
            } else {
                "effect instance"
            }),
            params,
            clips: Mutex::new(Vec::new()),
            descriptor,
            setup,
            abort: AtomicBool::new(false),
            abort_polls: AtomicUsize::new(0),
            abort_on_update: Mutex::new(None),
            abort_raised: Mutex::new(None),
            progress_updates: AtomicUsize::new(0),
            progress_bar: Mutex::new(None),
            live_images: Arc::new(AtomicIsize::new(0)),
            fetched: AtomicUsize::new(0),
            shared,
        });
        registry::add(e.handle() as usize, Kind::Effect);
        e
    }

    pub fn handle(&self) -> OfxImageEffectHandle {
        self as *const Effect as OfxImageEffectHandle
    }

    pub fn clip_names(&self) -> Vec<String> {
        self.clips
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// A parameter's property, e.g. its type or default.
    pub fn param_props<R>(&self, name: &str, f: impl FnOnce(&PropSet) -> R) -> Option<R> {
        self.params.with(name, |p| f(&p.props))
    }
}

impl Drop for Effect {
    fn drop(&mut self) {
        let me = self.handle() as usize;
        registry::remove(me);
        // A later effect may get this address: its events are its own.
        self.shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|e| e.effect() != Some(me));
    }
}

struct BinaryInner {
    plugins: Vec<*const OfxPlugin>,
    // Kept alive: the plugin holds pointers to them.
    _ofx_host: Box<OfxHost>,
    _host_props: Box<PropSet>,
    shared: Arc<Shared>,
}

// SAFETY: the plugin structs are static data of a library that stays
// loaded; everything else is behind locks.
unsafe impl Send for BinaryInner {}
// SAFETY: as above.
unsafe impl Sync for BinaryInner {}

/// A loaded plugin binary (`.ofx`). It stays mapped for the process, as in
/// most hosts: unloading a Rust cdylib that may have threads is unsound.
#[derive(Clone)]
pub struct Binary(Arc<BinaryInner>);

impl Binary {
    /// dlopen, `OfxSetHost` (if exported), `OfxGetNumberOfPlugins`,
    /// `OfxGetPlugin` and each plugin's `setHost`.
    pub fn load(path: &Path, config: HostConfig) -> Result<Binary, String> {
        // SAFETY: loading a plugin runs its initialisers, as any host does.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        let shared = Arc::new(Shared {
            config: config.clone(),
            events: Mutex::new(Vec::new()),
        });
        let host_props = PropSet::with_owner("host", Arc::as_ptr(&shared) as usize);
        describe_host(&host_props, &config);
        let ofx_host = Box::new(OfxHost {
            host: host_props.handle(),
            fetchSuite: Some(suites::fetch_suite),
        });
        // SAFETY: the OpenFX entry points have these C types.
        let plugins = unsafe {
            if let Ok(set_host) =
                lib.get::<unsafe extern "C" fn(*const OfxHost) -> OfxStatus>(b"OfxSetHost")
            {
                let st = set_host(&*ofx_host);
                if st != kOfxStatOK {
                    return Err(format!("OfxSetHost refused the host: {st}"));
                }
            }
            let count = lib
                .get::<unsafe extern "C" fn() -> c_int>(b"OfxGetNumberOfPlugins")
                .map_err(|e| e.to_string())?;
            let get = lib
                .get::<unsafe extern "C" fn(c_int) -> *const OfxPlugin>(b"OfxGetPlugin")
                .map_err(|e| e.to_string())?;
            let n = count();
            let mut v = Vec::new();
            for i in 0..n {
                let p = get(i);
                if p.is_null() {
                    return Err(format!("OfxGetPlugin({i}) of {n} is NULL"));
                }
                if let Some(set) = (*p).setHost {
                    set(&*ofx_host as *const OfxHost as *mut OfxHost);
                }
                v.push(p);
            }
            v
        };
        Ok(Binary(Arc::new(BinaryInner {
            plugins,
            _ofx_host: ofx_host,
            _host_props: host_props,
            shared,
        })))
    }

    pub fn plugins(&self) -> Vec<Plugin> {
        (0..self.0.plugins.len())
            .map(|index| Plugin {
                bin: self.0.clone(),
                index,
            })
            .collect()
    }

    pub fn plugin(&self, id: &str) -> Plugin {
        self.plugins()
            .into_iter()
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("no plugin {id}"))
    }

    pub fn events(&self) -> Vec<Event> {
        self.0.shared.events()
    }
}

/// The host's own description (`OfxHost::host`).
fn describe_host(p: &PropSet, config: &HostConfig) {
    p.set(kOfxPropType, vec![s(kOfxTypeImageEffectHost)]);
    p.set(kOfxPropName, vec![string(config.name)]);
    p.set(kOfxPropLabel, vec![string("CogVideoX test host")]);
    p.set(kOfxPropVersion, vec![Value::Int(1), Value::Int(0)]);
    p.set(kOfxPropVersionLabel, vec![string("1.0")]);
    p.set(kOfxPropAPIVersion, vec![Value::Int(1), Value::Int(4)]);
    p.set(kOfxImageEffectHostPropIsBackground, vec![Value::Int(0)]);
    p.set(kOfxImageEffectPropSupportsOverlays, vec![Value::Int(0)]);
    p.set(
        kOfxImageEffectPropSupportsMultiResolution,
        vec![Value::Int(1)],
    );
    p.set(kOfxImageEffectPropSupportsTiles, vec![Value::Int(0)]);
    p.set(
        kOfxImageEffectPropTemporalClipAccess,
        vec![Value::Int((config.temporal == Temporal::Full) as i32)],
    );
    p.set(
        kOfxImageEffectPropSupportedComponents,
        vec![s(kOfxImageComponentRGBA)],
    );
    p.set(
        kOfxImageEffectPropSupportedContexts,
        config.contexts.iter().map(|c| s(c)).collect(),
    );
    p.set(
        kOfxImageEffectPropSupportedPixelDepths,
        vec![
            s(kOfxBitDepthByte),
            s(kOfxBitDepthShort),
            s(kOfxBitDepthFloat),
        ],
    );
    p.set(
        kOfxImageEffectPropSupportsMultipleClipDepths,
        vec![Value::Int(0)],
    );
    p.set(
        kOfxImageEffectPropSupportsMultipleClipPARs,
        vec![Value::Int(0)],
    );
    p.set(kOfxImageEffectPropSetableFrameRate, vec![Value::Int(0)]);
    p.set(kOfxImageEffectPropSetableFielding, vec![Value::Int(0)]);
    p.set(kOfxParamHostPropSupportsCustomInteract, vec![Value::Int(0)]);
    p.set(
        kOfxParamHostPropSupportsStringAnimation,
        vec![Value::Int(0)],
    );
    p.set(
        kOfxParamHostPropSupportsChoiceAnimation,
        vec![Value::Int(0)],
    );
    p.set(
        kOfxParamHostPropSupportsBooleanAnimation,
        vec![Value::Int(0)],
    );
    p.set(
        kOfxParamHostPropSupportsCustomAnimation,
        vec![Value::Int(0)],
    );
    p.set(kOfxParamHostPropMaxParameters, vec![Value::Int(-1)]);
    p.set(kOfxParamHostPropMaxPages, vec![Value::Int(0)]);
    p.set(
        kOfxParamHostPropPageRowColumnCount,
        vec![Value::Int(0), Value::Int(0)],
    );
    p.set(
        kOfxImageEffectInstancePropSequentialRender,
        vec![Value::Int(0)],
    );
    if config.natron {
        p.set_named("NatronOfxHostIsNatron", vec![Value::Int(1)]);
    }
}

/// One plugin of a binary.
#[derive(Clone)]
pub struct Plugin {
    bin: Arc<BinaryInner>,
    pub index: usize,
}

// Action arguments: NULL or a property set.
fn ps(p: Option<&PropSet>) -> OfxPropertySetHandle {
    p.map_or(std::ptr::null_mut(), |p| p.handle())
}

impl Plugin {
    fn raw(&self) -> &OfxPlugin {
        // SAFETY: valid while the library is loaded (for the process).
        unsafe { &*self.bin.plugins[self.index] }
    }

    pub fn id(&self) -> String {
        // SAFETY: a NUL-terminated identifier.
        unsafe { CStr::from_ptr(self.raw().pluginIdentifier) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn api(&self) -> (String, i32) {
        // SAFETY: a NUL-terminated API name.
        let api = unsafe { CStr::from_ptr(self.raw().pluginApi) };
        (api.to_string_lossy().into_owned(), self.raw().apiVersion)
    }

    pub fn version(&self) -> (u32, u32) {
        (self.raw().pluginVersionMajor, self.raw().pluginVersionMinor)
    }

    /// Calls `mainEntry`.
    pub fn action(
        &self,
        action: &CStr,
        handle: *const c_void,
        in_args: Option<&PropSet>,
        out_args: Option<&PropSet>,
    ) -> OfxStatus {
        let main = self.raw().mainEntry.expect("the plugin has a mainEntry");
        // SAFETY: the plugin's entry point with valid handles.
        unsafe { main(action.as_ptr(), handle, ps(in_args), ps(out_args)) }
    }

    pub fn load(&self) -> OfxStatus {
        self.action(kOfxActionLoad, std::ptr::null(), None, None)
    }

    pub fn unload(&self) -> OfxStatus {
        self.action(kOfxActionUnload, std::ptr::null(), None, None)
    }

    /// The Describe action on a new descriptor.
    pub fn describe(&self) -> (OfxStatus, Box<Effect>) {
        let d = Effect::new(
            true,
            None,
            params::ParamSet::new(true),
            self.bin.shared.clone(),
        );
        d.props.set(kOfxPropType, vec![s(kOfxTypeImageEffect)]);
        d.props.set(kOfxPropLabel, vec![string(&self.id())]);
        d.props
            .set(kOfxImageEffectPluginPropGrouping, vec![string("")]);
        d.props.set(
            kOfxImageEffectPluginRenderThreadSafety,
            vec![s(kOfxImageEffectRenderInstanceSafe)],
        );
        d.props.set(
            kOfxImageEffectPluginPropHostFrameThreading,
            vec![Value::Int(1)],
        );
        d.props
            .set(kOfxImageEffectPropSupportsTiles, vec![Value::Int(1)]);
        d.props
            .set(kOfxImageEffectPropTemporalClipAccess, vec![Value::Int(0)]);
        d.props.set(
            kOfxImageEffectPropSupportsMultiResolution,
            vec![Value::Int(1)],
        );
        d.props.set(kOfxImageEffectPropSupportedContexts, vec![]);
        d.props.set(kOfxImageEffectPropSupportedPixelDepths, vec![]);
        let st = self.action(kOfxActionDescribe, d.handle() as *const c_void, None, None);
        (st, d)
    }

    /// DescribeInContext on a new descriptor holding `desc`'s properties.
    pub fn describe_in_context(&self, desc: &Effect, context: &CStr) -> (OfxStatus, Box<Effect>) {
        self.describe_in_context_refusing(desc, context, &[])
    }

    /// The same in a host that knows none of the `refused` properties on
    /// parameters (and, with `hostsupport`, only HostSupport's).
    pub fn describe_in_context_refusing(
        &self,
        desc: &Effect,
        context: &CStr,
        refused: &[&'static CStr],
    ) -> (OfxStatus, Box<Effect>) {
        let d = Effect::new(
            true,
            None,
            params::ParamSet::new(true),
            self.bin.shared.clone(),
        );
        d.props.copy_from(&desc.props);
        d.props.set(kOfxImageEffectPropContext, vec![s(context)]);
        let hostsupport = self.bin.shared.config.hostsupport || !refused.is_empty();
        d.params.hostsupport.store(hostsupport, Ordering::SeqCst);
        d.params.refused.lock().unwrap().extend_from_slice(refused);
        let args = PropSet::new("describe in context args");
        args.set(kOfxImageEffectPropContext, vec![s(context)]);
        let st = self.action(
            kOfxImageEffectActionDescribeInContext,
            d.handle() as *const c_void,
            Some(&args),
            None,
        );
        (st, d)
    }

    /// Creates an instance from a context descriptor: clips and parameters
    /// as described, then CreateInstance and GetClipPreferences.
    pub fn create_instance(
        &self,
        desc: &Effect,
        context: &CStr,
        setup: Setup,
    ) -> Result<Instance, OfxStatus> {
        let e = Effect::new(
            false,
            Some(setup.clone()),
            desc.params.instantiate(),
            self.bin.shared.clone(),
        );
        e.props.copy_from(&desc.props);
        e.props
            .set(kOfxPropType, vec![s(kOfxTypeImageEffectInstance)]);
        e.props.set(kOfxImageEffectPropContext, vec![s(context)]);
        e.props.set(
            kOfxPropIsInteractive,
            vec![Value::Int(setup.interactive as i32)],
        );
        let (w, h) = (setup.size.0 as f64, setup.size.1 as f64);
        e.props.set(
            kOfxImageEffectPropProjectSize,
            vec![Value::Double(w), Value::Double(h)],
        );
        e.props.set(
            kOfxImageEffectPropProjectExtent,
            vec![Value::Double(w), Value::Double(h)],
        );
        e.props.set(
            kOfxImageEffectPropProjectOffset,
            vec![Value::Double(0.0), Value::Double(0.0)],
        );
        e.props.set(
            kOfxImageEffectPropProjectPixelAspectRatio,
            vec![Value::Double(1.0)],
        );
        let (first, last) = setup.frame_range;
        e.props.set(
            kOfxImageEffectInstancePropEffectDuration,
            vec![Value::Double(last - first + 1.0)],
        );
        e.props.set(
            kOfxImageEffectInstancePropSequentialRender,
            vec![Value::Int(0)],
        );
        e.props
            .set(kOfxImageEffectPropFrameRate, vec![Value::Double(setup.fps)]);
        e.props.set(kOfxPropInstanceData, vec![Value::Ptr(0)]);
        for d in desc.clips.lock().unwrap().iter() {
            let mut c = Clip::new(&d.name, e.handle() as usize);
            c.props.copy_from(&d.props);
            let is_source = d.name.as_bytes() == kOfxImageEffectSimpleSourceClipName.to_bytes();
            let is_output = d.name.as_bytes() == kOfxImageEffectOutputClipName.to_bytes();
            if is_source {
                c.source = setup.source.clone();
            }
            let connected = is_output || (is_source && setup.source.is_some());
            let depth = s(setup.depth.name());
            c.props
                .set(kOfxImageEffectPropPixelDepth, vec![depth.clone()]);
            c.props
                .set(kOfxImageClipPropUnmappedPixelDepth, vec![depth]);
            let comps = s(setup.layout.components());
            c.props
                .set(kOfxImageEffectPropComponents, vec![comps.clone()]);
            c.props
                .set(kOfxImageClipPropUnmappedComponents, vec![comps]);
            c.props.set(
                kOfxImageEffectPropPreMultiplication,
                vec![s(kOfxImagePreMultiplied)],
            );
            c.props
                .set(kOfxImagePropPixelAspectRatio, vec![Value::Double(1.0)]);
            c.props
                .set(kOfxImageEffectPropFrameRate, vec![Value::Double(setup.fps)]);
            c.props.set(
                kOfxImageEffectPropUnmappedFrameRate,
                vec![Value::Double(setup.fps)],
            );
            let range = vec![Value::Double(first), Value::Double(last)];
            c.props.set(kOfxImageEffectPropFrameRange, range.clone());
            c.props.set(kOfxImageEffectPropUnmappedFrameRange, range);
            c.props
                .set(kOfxImageClipPropFieldOrder, vec![s(kOfxImageFieldNone)]);
            c.props.set(
                kOfxImageClipPropConnected,
                vec![Value::Int(connected as i32)],
            );
            c.props
                .set(kOfxImageClipPropContinuousSamples, vec![Value::Int(0)]);
            e.clips.lock().unwrap().push(c);
        }
        let inst = Instance {
            plugin: self.clone(),
            effect: e,
        };
        let st = self.action(
            kOfxActionCreateInstance,
            inst.effect.handle() as *const c_void,
            None,
            None,
        );
        if st != kOfxStatOK && st != kOfxStatReplyDefault {
            return Err(st);
        }
        let (st, _) = inst.clip_preferences();
        if st != kOfxStatOK && st != kOfxStatReplyDefault {
            return Err(st);
        }
        Ok(inst)
    }
}

/// What a render asks for.
#[derive(Clone, Copy, Debug)]
pub struct Render {
    pub time: f64,
    pub scale: f64,
    pub interactive: bool,
    /// Brackets the render with Begin/EndSequenceRender.
    pub sequence: bool,
    /// A thumbnail render: the Source clip's `kOfxImageClipPropThumbnail`
    /// is 1 during it, as Resolve sets it for its 184x92 thumbnails
    /// (openfx-misc issue 56; lightsailvr/ResolveOFX_NDIOutput's trace).
    pub thumbnail: bool,
}

impl Render {
    pub fn at(time: f64) -> Render {
        Render {
            time,
            scale: 1.0,
            interactive: false,
            sequence: true,
            thumbnail: false,
        }
    }
}

/// What a render returned.
pub struct Rendered {
    pub status: OfxStatus,
    /// The output image, top-down; untouched samples hold `image::FILL`.
    pub pixels: Pixels,
    pub padding_intact: bool,
    /// IsIdentity answered: the host copied this clip instead of rendering.
    pub identity: Option<String>,
    pub elapsed: Duration,
}

/// An effect instance.
pub struct Instance {
    pub plugin: Plugin,
    pub effect: Box<Effect>,
}

// SAFETY: the effect's state is behind locks and atomics; the plugin
// declares its own thread safety, which tests respect.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    fn handle(&self) -> *const c_void {
        self.effect.handle() as *const c_void
    }

    fn setup(&self) -> &Setup {
        self.effect.setup.as_ref().expect("an instance")
    }

    pub fn action(
        &self,
        action: &CStr,
        in_args: Option<&PropSet>,
        out_args: Option<&PropSet>,
    ) -> OfxStatus {
        self.plugin.action(action, self.handle(), in_args, out_args)
    }

    /// A parameter's current value.
    pub fn param(&self, name: &str) -> Vec<Value> {
        self.effect
            .params
            .with(name, |p| p.get())
            .unwrap_or_else(|| panic!("no parameter {name}"))
    }

    /// A user edit: sets the value and sends Begin/InstanceChanged/End
    /// (reason: user edited); returns InstanceChanged's status.
    pub fn set_param(&self, name: &str, v: Vec<Value>) -> OfxStatus {
        self.effect
            .params
            .with(name, |p| p.set(v))
            .unwrap_or_else(|| panic!("no parameter {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.changed(kOfxTypeParameter, name)
    }

    pub fn set_int(&self, name: &str, v: i32) -> OfxStatus {
        self.set_param(name, vec![Value::Int(v)])
    }

    pub fn set_double(&self, name: &str, v: f64) -> OfxStatus {
        self.set_param(name, vec![Value::Double(v)])
    }

    pub fn set_string(&self, name: &str, v: &str) -> OfxStatus {
        self.set_param(name, vec![Value::Str(CString::new(v).unwrap())])
    }

    /// A push button pressed.
    pub fn press(&self, name: &str) -> OfxStatus {
        self.changed(kOfxTypeParameter, name)
    }

    /// A push button pressed with the timeline at `time`.
    pub fn press_at(&self, name: &str, time: f64) -> OfxStatus {
        self.changed_at(kOfxTypeParameter, name, time)
    }

    fn changed(&self, ty: &CStr, name: &str) -> OfxStatus {
        self.changed_at(ty, name, 0.0)
    }

    fn changed_at(&self, ty: &CStr, name: &str, time: f64) -> OfxStatus {
        let bracket = PropSet::new("instance changed bracket");
        bracket.set(kOfxPropChangeReason, vec![s(kOfxChangeUserEdited)]);
        let args = PropSet::new("instance changed args");
        args.set(kOfxPropType, vec![s(ty)]);
        args.set(kOfxPropName, vec![string(name)]);
        args.set(kOfxPropChangeReason, vec![s(kOfxChangeUserEdited)]);
        args.set(kOfxPropTime, vec![Value::Double(time)]);
        args.set(
            kOfxImageEffectPropRenderScale,
            vec![Value::Double(1.0), Value::Double(1.0)],
        );
        let begin = self.action(kOfxActionBeginInstanceChanged, Some(&bracket), None);
        assert!(
            begin == kOfxStatOK || begin == kOfxStatReplyDefault,
            "BeginInstanceChanged: {begin}"
        );
        let st = self.action(kOfxActionInstanceChanged, Some(&args), None);
        let end = self.action(kOfxActionEndInstanceChanged, Some(&bracket), None);
        assert!(
            end == kOfxStatOK || end == kOfxStatReplyDefault,
            "EndInstanceChanged: {end}"
        );
        st
    }

    /// GetClipPreferences: its status and out arguments.
    pub fn clip_preferences(&self) -> (OfxStatus, Box<PropSet>) {
        let out = PropSet::new("clip preferences");
        let depth = s(self.setup().depth.name());
        for c in self.effect.clip_names() {
            out.set_named(
                &format!("OfxImageClipPropComponents_{c}"),
                vec![s(self.setup().layout.components())],
            );
            out.set_named(&format!("OfxImageClipPropDepth_{c}"), vec![depth.clone()]);
            out.set_named(
                &format!("OfxImageClipPropPAR_{c}"),
                vec![Value::Double(1.0)],
            );
        }
        out.set(
            kOfxImageEffectPropFrameRate,
            vec![Value::Double(self.setup().fps)],
        );
        out.set(kOfxImageClipPropFieldOrder, vec![s(kOfxImageFieldNone)]);
        out.set(
            kOfxImageEffectPropPreMultiplication,
            vec![s(kOfxImagePreMultiplied)],
        );
        out.set(kOfxImageClipPropContinuousSamples, vec![Value::Int(0)]);
        out.set(kOfxImageEffectFrameVarying, vec![Value::Int(0)]);
        let st = self.action(kOfxImageEffectActionGetClipPreferences, None, Some(&out));
        (st, out)
    }

    /// GetFramesNeeded for the Source clip at `time`: its status and the
    /// ranges (pairs), initialised to the default `[time, time]`.
    pub fn frames_needed(&self, time: f64) -> (OfxStatus, Vec<(f64, f64)>) {
        let args = PropSet::new("frames needed args");
        args.set(kOfxPropTime, vec![Value::Double(time)]);
        let out = PropSet::new("frames needed");
        let key = "OfxImageClipPropFrameRange_Source";
        out.set_named(key, vec![Value::Double(time), Value::Double(time)]);
        let st = self.action(
            kOfxImageEffectActionGetFramesNeeded,
            Some(&args),
            Some(&out),
        );
        let v = out.doubles_named(key);
        (st, v.chunks(2).map(|c| (c[0], c[1])).collect())
    }

    pub fn raise_abort(&self) {
        *self.effect.abort_raised.lock().unwrap() = Some(Instant::now());
        self.effect.abort.store(true, Ordering::SeqCst);
    }

    pub fn lower_abort(&self) {
        self.effect.abort.store(false, Ordering::SeqCst);
        *self.effect.abort_on_update.lock().unwrap() = None;
    }

    /// Raises the abort flag at the `n`th progress update from now on.
    pub fn abort_at_progress_update(&self, n: usize) {
        let base = self.effect.progress_updates.load(Ordering::SeqCst);
        *self.effect.abort_on_update.lock().unwrap() = Some(base + n);
    }

    pub fn abort_raised_at(&self) -> Option<Instant> {
        *self.effect.abort_raised.lock().unwrap()
    }

    pub fn abort_polls(&self) -> usize {
        self.effect.abort_polls.load(Ordering::SeqCst)
    }

    /// Images given to the plugin and not released.
    pub fn live_images(&self) -> isize {
        self.effect.live_images.load(Ordering::SeqCst)
    }

    /// Which images the plugin has not released (`clip@time`).
    pub fn unreleased_images(&self) -> Vec<String> {
        suites::unreleased(&self.effect.live_images)
    }

    /// This instance's events.
    pub fn events(&self) -> Vec<Event> {
        let me = self.effect.handle() as usize;
        self.effect
            .shared
            .events()
            .into_iter()
            .filter(|e| e.effect() == Some(me))
            .collect()
    }

    /// The last persistent message, `None` when cleared or never set.
    pub fn persistent_message(&self) -> Option<(String, String)> {
        let mut last = None;
        for e in self.events() {
            match e {
                Event::Message {
                    persistent: true,
                    kind,
                    text,
                    ..
                } => last = Some((kind, text)),
                Event::ClearMessage(_) => last = None,
                _ => {}
            }
        }
        last
    }

    fn output_size(&self, scale: f64) -> (usize, usize) {
        let (w, h) = self.setup().size;
        ((w as f64 * scale) as usize, (h as f64 * scale) as usize)
    }

    /// A render as hosts do it: IsIdentity, then (in a sequence bracket)
    /// Render into a fresh output image of the instance's depth and layout.
    pub fn render(&self, r: &Render) -> Rendered {
        let start = Instant::now();
        let (w, h) = self.output_size(r.scale);
        let mut out = Box::new(Buffer::new(w, h, self.setup().depth, self.setup().layout));
        let scale = vec![Value::Double(r.scale), Value::Double(r.scale)];
        let window = vec![
            Value::Int(0),
            Value::Int(0),
            Value::Int(w as i32),
            Value::Int(h as i32),
        ];
        let _guard = RenderGuard::enter(self.effect.handle() as usize, r, &mut out);
        let thumbnail_flag = |on: bool| {
            for c in self.effect.clips.lock().unwrap().iter() {
                if c.name.as_bytes() == kOfxImageEffectSimpleSourceClipName.to_bytes() {
                    c.props
                        .set_named("kOfxImageClipPropThumbnail", vec![Value::Int(on as i32)]);
                }
            }
        };
        thumbnail_flag(r.thumbnail);

        let args = PropSet::new("is identity args");
        args.set(kOfxPropTime, vec![Value::Double(r.time)]);
        args.set(
            kOfxImageEffectPropFieldToRender,
            vec![s(kOfxImageFieldNone)],
        );
        args.set(kOfxImageEffectPropRenderWindow, window.clone());
        args.set(kOfxImageEffectPropRenderScale, scale.clone());
        let ident = PropSet::new("is identity");
        ident.set(kOfxPropName, vec![string("")]);
        ident.set(kOfxPropTime, vec![Value::Double(r.time)]);
        let st = self.action(kOfxImageEffectActionIsIdentity, Some(&args), Some(&ident));
        let clip = ident.string(kOfxPropName).unwrap_or_default();
        if st == kOfxStatOK && !clip.is_empty() {
            let t = ident.double(kOfxPropTime).unwrap_or(r.time);
            let source = self
                .setup()
                .source
                .as_ref()
                .expect("identity of the source");
            let src = source(t, r.scale).expect("a source frame");
            let padding_intact = out.padding_intact();
            return Rendered {
                status: kOfxStatOK,
                pixels: src,
                padding_intact,
                identity: Some(clip),
                elapsed: start.elapsed(),
            };
        }

        let seq = PropSet::new("sequence render args");
        seq.set(
            kOfxImageEffectPropFrameRange,
            vec![Value::Double(r.time), Value::Double(r.time)],
        );
        seq.set(kOfxImageEffectPropFrameStep, vec![Value::Double(1.0)]);
        seq.set(
            kOfxPropIsInteractive,
            vec![Value::Int(r.interactive as i32)],
        );
        seq.set(kOfxImageEffectPropRenderScale, scale.clone());
        seq.set(
            kOfxImageEffectPropSequentialRenderStatus,
            vec![Value::Int(0)],
        );
        seq.set(
            kOfxImageEffectPropInteractiveRenderStatus,
            vec![Value::Int(r.interactive as i32)],
        );
        if r.sequence {
            let st = self.action(kOfxImageEffectActionBeginSequenceRender, Some(&seq), None);
            assert!(
                st == kOfxStatOK || st == kOfxStatReplyDefault,
                "BeginSequenceRender: {st}"
            );
        }
        let args = PropSet::new("render args");
        args.set(kOfxPropTime, vec![Value::Double(r.time)]);
        args.set(
            kOfxImageEffectPropFieldToRender,
            vec![s(kOfxImageFieldNone)],
        );
        args.set(kOfxImageEffectPropRenderWindow, window);
        args.set(kOfxImageEffectPropRenderScale, scale);
        args.set(
            kOfxImageEffectPropSequentialRenderStatus,
            vec![Value::Int(0)],
        );
        args.set(
            kOfxImageEffectPropInteractiveRenderStatus,
            vec![Value::Int(r.interactive as i32)],
        );
        args.set(kOfxImageEffectPropRenderQualityDraft, vec![Value::Int(0)]);
        let status = self.action(kOfxImageEffectActionRender, Some(&args), None);
        thumbnail_flag(false);
        if r.sequence {
            let st = self.action(kOfxImageEffectActionEndSequenceRender, Some(&seq), None);
            assert!(
                st == kOfxStatOK || st == kOfxStatReplyDefault,
                "EndSequenceRender: {st}"
            );
        }
        Rendered {
            status,
            pixels: out.to_pixels(),
            padding_intact: out.padding_intact(),
            identity: None,
            elapsed: start.elapsed(),
        }
    }

    /// DestroyInstance; the host's objects go with the instance.
    pub fn destroy(self) -> OfxStatus {
        self.action(kOfxActionDestroyInstance, None, None)
    }
}

/// Marks this thread as rendering (for clipGetImage) until dropped.
struct RenderGuard;

impl RenderGuard {
    fn enter(effect: usize, r: &Render, out: &mut Buffer) -> RenderGuard {
        suites::RENDER.with(|c| {
            *c.borrow_mut() = Some(suites::RenderCtx {
                effect,
                time: r.time,
                scale: r.scale,
                output: out as *mut Buffer,
            })
        });
        RenderGuard
    }
}

impl Drop for RenderGuard {
    fn drop(&mut self) {
        suites::RENDER.with(|c| *c.borrow_mut() = None);
    }
}

/// Fetches the Source image at `time` through the suite, as a plugin would
/// inside a render at `render_time` (for tests of the host itself).
pub fn fetch_in_render(inst: &Instance, render_time: f64, time: f64) -> Option<Pixels> {
    let mut out = Buffer::new(1, 1, inst.setup().depth, Layout::PLAIN);
    let _guard = RenderGuard::enter(
        inst.effect.handle() as usize,
        &Render::at(render_time),
        &mut out,
    );
    fetch_source(inst, time)
}

/// The same outside any render.
pub fn fetch_outside_render(inst: &Instance, time: f64) -> Option<Pixels> {
    fetch_source(inst, time)
}

fn fetch_source(inst: &Instance, time: f64) -> Option<Pixels> {
    let clip = {
        let clips = inst.effect.clips.lock().unwrap();
        clips
            .iter()
            .find(|c| c.name.as_bytes() == kOfxImageEffectSimpleSourceClipName.to_bytes())
            .expect("a Source clip")
            .handle()
    };
    let get = suites::EFFECT_SUITE.clipGetImage.unwrap();
    let release = suites::EFFECT_SUITE.clipReleaseImage.unwrap();
    let mut h: OfxPropertySetHandle = std::ptr::null_mut();
    // SAFETY: a live clip and an out pointer.
    if unsafe { get(clip, time, std::ptr::null(), &mut h) } != kOfxStatOK {
        return None;
    }
    // SAFETY: a live image's property set.
    let pixels = read_image(unsafe { &*(h as *const PropSet) });
    // SAFETY: the image just fetched.
    assert_eq!(unsafe { release(h) }, kOfxStatOK);
    Some(pixels)
}

/// An image's pixels read through its properties, as a plugin reads them.
fn read_image(p: &PropSet) -> Pixels {
    let depth = match p.string(kOfxImageEffectPropPixelDepth).as_deref() {
        Some("OfxBitDepthByte") => Depth::Byte,
        Some("OfxBitDepthShort") => Depth::Short,
        _ => Depth::Float,
    };
    let bounds: Vec<i32> = p
        .get(kOfxImagePropBounds)
        .unwrap()
        .into_iter()
        .map(|v| match v {
            Value::Int(i) => i,
            _ => panic!("bounds are ints"),
        })
        .collect();
    let row_bytes = p.int(kOfxImagePropRowBytes).unwrap() as isize;
    let Some(Value::Ptr(data)) = p.get(kOfxImagePropData).and_then(|v| v.first().cloned()) else {
        panic!("no image data");
    };
    let (w, h) = (
        (bounds[2] - bounds[0]) as usize,
        (bounds[3] - bounds[1]) as usize,
    );
    let rgb = p.string(kOfxImageEffectPropComponents).as_deref() == Some("OfxImageComponentRGB");
    let bx = if rgb { 3 } else { 4 } * depth.bytes();
    let mut px = Pixels::new(w, h, depth);
    let px_bytes = 4 * depth.bytes();
    for r in 0..h {
        let y = (h - 1 - r) as isize;
        // SAFETY: rows inside the image's bounds.
        let row = unsafe {
            std::slice::from_raw_parts((data as *const u8).wrapping_offset(y * row_bytes), w * bx)
        };
        for x in 0..w {
            let to = (r * w + x) * px_bytes;
            px.data[to..to + bx].copy_from_slice(&row[x * bx..(x + 1) * bx]);
        }
    }
    px
}
