//! The image effect, memory, multithread, message and progress suites, and
//! `fetchSuite`.

use std::alloc::Layout as MemLayout;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Instant;

use super::image::{Buffer, Depth};
use super::ofx::*;
use super::props::{PropSet, Value, s, string};
use super::registry::{self, Kind};
use super::{Clip, Effect, Event, Shared, Temporal};

/// The render in progress on this thread: only its thread may fetch the
/// output image, and the source at other times follows the host's
/// temporal-access setting.
pub struct RenderCtx {
    pub effect: usize,
    pub time: f64,
    pub scale: f64,
    pub output: *mut Buffer,
}

thread_local! {
    pub static RENDER: RefCell<Option<RenderCtx>> = const { RefCell::new(None) };
    static THREAD_INDEX: Cell<Option<u32>> = const { Cell::new(None) };
}

fn effect<'a>(h: OfxImageEffectHandle, what: &str) -> Option<&'a Effect> {
    if !registry::is(h as usize, Kind::Effect) {
        registry::violation(format!("{what}: bad image effect handle {h:?}"));
        return None;
    }
    // SAFETY: registered handles point to live, boxed effects.
    Some(unsafe { &*(h as *const Effect) })
}

fn clip<'a>(h: OfxImageClipHandle, what: &str) -> Option<&'a Clip> {
    if !registry::is(h as usize, Kind::Clip) {
        registry::violation(format!("{what}: bad clip handle {h:?}"));
        return None;
    }
    // SAFETY: registered handles point to live, boxed clips.
    Some(unsafe { &*(h as *const Clip) })
}

fn cstr<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated strings from the plugin.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

unsafe extern "C" fn get_property_set(
    h: OfxImageEffectHandle,
    out: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(e) = effect(h, "getPropertySet") else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe { *out = e.props.handle() };
    kOfxStatOK
}

unsafe extern "C" fn get_param_set(
    h: OfxImageEffectHandle,
    out: *mut OfxParamSetHandle,
) -> OfxStatus {
    let Some(e) = effect(h, "getParamSet") else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe { *out = e.params.handle() };
    kOfxStatOK
}

unsafe extern "C" fn clip_define(
    h: OfxImageEffectHandle,
    name: *const c_char,
    out: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(e) = effect(h, "clipDefine") else {
        return kOfxStatErrBadHandle;
    };
    let Some(name) = cstr(name) else {
        return kOfxStatErrValue;
    };
    if !e.descriptor {
        registry::violation(format!("clipDefine({name}) on an instance"));
        return kOfxStatErrBadHandle;
    }
    let mut clips = e.clips.lock().unwrap();
    if clips.iter().any(|c| c.name == name) {
        return kOfxStatErrExists;
    }
    let c = Clip::new(name, h as usize);
    c.props.set(kOfxPropType, vec![s(kOfxTypeClip)]);
    c.props.set(kOfxPropName, vec![string(name)]);
    c.props.set(kOfxPropLabel, vec![string(name)]);
    c.props.set(kOfxImageClipPropOptional, vec![Value::Int(0)]);
    c.props
        .set(kOfxImageEffectPropTemporalClipAccess, vec![Value::Int(0)]);
    c.props
        .set(kOfxImageEffectPropSupportsTiles, vec![Value::Int(1)]);
    if !out.is_null() {
        // SAFETY: the plugin's out pointer.
        unsafe { *out = c.props.handle() };
    }
    clips.push(c);
    kOfxStatOK
}

unsafe extern "C" fn clip_get_handle(
    h: OfxImageEffectHandle,
    name: *const c_char,
    out: *mut OfxImageClipHandle,
    props: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(e) = effect(h, "clipGetHandle") else {
        return kOfxStatErrBadHandle;
    };
    let Some(name) = cstr(name) else {
        return kOfxStatErrValue;
    };
    if e.descriptor {
        registry::violation(format!("clipGetHandle({name}) on a descriptor"));
        return kOfxStatErrBadHandle;
    }
    if out.is_null() {
        return kOfxStatErrValue;
    }
    let clips = e.clips.lock().unwrap();
    let Some(c) = clips.iter().find(|c| c.name == name) else {
        return kOfxStatErrUnknown;
    };
    // SAFETY: the plugin's out pointers.
    unsafe {
        *out = c.handle();
        if !props.is_null() {
            *props = c.props.handle();
        }
    }
    kOfxStatOK
}

unsafe extern "C" fn clip_get_property_set(
    h: OfxImageClipHandle,
    out: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(c) = clip(h, "clipGetPropertySet") else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe { *out = c.props.handle() };
    kOfxStatOK
}

/// An image given to the plugin; its memory is the host's (a copy of the
/// source) or the render's output buffer.
struct Image {
    props: Box<PropSet>,
    _buffer: Option<Box<Buffer>>,
    live: Arc<AtomicIsize>,
}

static IMAGES: Mutex<Option<HashMap<usize, Image>>> = Mutex::new(None);

/// The identifiers (`clip@time`) of the images given for the effect that
/// owns `live` and not released, sorted.
pub fn unreleased(live: &Arc<AtomicIsize>) -> Vec<String> {
    let images = IMAGES.lock().unwrap();
    let mut ids: Vec<String> = images
        .iter()
        .flat_map(|m| m.values())
        .filter(|img| Arc::ptr_eq(&img.live, live))
        .filter_map(|img| img.props.string(kOfxImagePropUniqueIdentifier))
        .collect();
    ids.sort();
    ids
}

fn image_props(buf: &mut Buffer, depth: Depth, scale: f64, id: &str) -> Box<PropSet> {
    let p = PropSet::new(&format!("image {id}"));
    let (w, h) = (buf.width as i32, buf.height as i32);
    p.set(kOfxPropType, vec![s(kOfxTypeImage)]);
    p.set(kOfxImageEffectPropPixelDepth, vec![s(depth.name())]);
    p.set(
        kOfxImageEffectPropComponents,
        vec![s(buf.layout.components())],
    );
    p.set(
        kOfxImageEffectPropPreMultiplication,
        vec![s(kOfxImagePreMultiplied)],
    );
    p.set(
        kOfxImageEffectPropRenderScale,
        vec![Value::Double(scale), Value::Double(scale)],
    );
    p.set(kOfxImagePropPixelAspectRatio, vec![Value::Double(1.0)]);
    p.set(kOfxImagePropData, vec![Value::Ptr(buf.data() as usize)]);
    let rect = vec![Value::Int(0), Value::Int(0), Value::Int(w), Value::Int(h)];
    p.set(kOfxImagePropBounds, rect.clone());
    p.set(kOfxImagePropRegionOfDefinition, rect);
    p.set(
        kOfxImagePropRowBytes,
        vec![Value::Int(buf.row_bytes() as i32)],
    );
    p.set(kOfxImagePropField, vec![s(kOfxImageFieldNone)]);
    p.set(kOfxImagePropUniqueIdentifier, vec![string(id)]);
    p
}

fn give_image(e: &Effect, img: Image, out: *mut OfxPropertySetHandle) -> OfxStatus {
    let h = img.props.handle();
    img.live.fetch_add(1, Ordering::SeqCst);
    e.fetched.fetch_add(1, Ordering::SeqCst);
    IMAGES
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(h as usize, img);
    // SAFETY: the plugin's out pointer.
    unsafe { *out = h };
    kOfxStatOK
}

unsafe extern "C" fn clip_get_image(
    h: OfxImageClipHandle,
    time: OfxTime,
    _region: *const OfxRectD,
    out: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(c) = clip(h, "clipGetImage") else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    let Some(e) = effect(c.effect as OfxImageEffectHandle, "clipGetImage") else {
        return kOfxStatErrBadHandle;
    };
    let Some(setup) = e.setup.as_ref() else {
        registry::violation(format!("clipGetImage({}) on a descriptor", c.name));
        return kOfxStatErrBadHandle;
    };
    let ctx = RENDER.with(|r| {
        r.borrow()
            .as_ref()
            .filter(|ctx| ctx.effect == c.effect)
            .map(|ctx| (ctx.time, ctx.scale, ctx.output))
    });
    let record = |served: bool| {
        e.shared.record(Event::Fetch {
            effect: c.effect,
            clip: c.name.clone(),
            time,
            render_time: ctx.map(|c| c.0),
            served,
        })
    };
    let depth = setup.depth;
    if c.name.as_bytes() == kOfxImageEffectOutputClipName.to_bytes() {
        let Some((t, scale, buf)) = ctx else {
            record(false);
            return kOfxStatFailed;
        };
        if t != time {
            registry::violation(format!("output image fetched at {time} in a render at {t}"));
            record(false);
            return kOfxStatFailed;
        }
        // SAFETY: the render's buffer outlives the render call.
        let props = image_props(
            unsafe { &mut *buf },
            depth,
            scale,
            &format!("Output@{time}"),
        );
        record(true);
        let img = Image {
            props,
            _buffer: None,
            live: e.live_images.clone(),
        };
        return give_image(e, img, out);
    }
    let Some(source) = c.source.as_ref() else {
        record(false);
        return kOfxStatFailed;
    };
    let (time_served, scale) = match ctx {
        None if !e.shared.config.images_outside_render => {
            record(false);
            return kOfxStatFailed;
        }
        None => (time, 1.0),
        Some((t, scale, _)) if t == time => (time, scale),
        Some((t, scale, _)) => match e.shared.config.temporal {
            Temporal::Full => {
                let declared = e.props.int(kOfxImageEffectPropTemporalClipAccess) == Some(1)
                    || c.props.int(kOfxImageEffectPropTemporalClipAccess) == Some(1);
                if !declared {
                    registry::violation(format!(
                        "{} fetched at {time} in a render at {t} without declaring temporal access",
                        c.name
                    ));
                }
                (time, scale)
            }
            // As MLT: the current image, whatever the time asked.
            Temporal::CurrentOnly => (t, scale),
            Temporal::None => {
                record(false);
                return kOfxStatFailed;
            }
        },
    };
    let range = setup.frame_range;
    if time_served < range.0 || time_served > range.1 {
        record(false);
        return kOfxStatFailed;
    }
    let Some(pixels) = source(time_served, scale) else {
        record(false);
        return kOfxStatFailed;
    };
    assert_eq!(pixels.depth, depth, "the test's source gives another depth");
    let mut buf = Box::new(Buffer::from_pixels(&pixels, setup.layout));
    let props = image_props(&mut buf, depth, scale, &format!("{}@{time_served}", c.name));
    record(true);
    let img = Image {
        props,
        _buffer: Some(buf),
        live: e.live_images.clone(),
    };
    give_image(e, img, out)
}

unsafe extern "C" fn clip_release_image(h: OfxPropertySetHandle) -> OfxStatus {
    let img = IMAGES
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .remove(&(h as usize));
    match img {
        Some(img) => {
            img.live.fetch_sub(1, Ordering::SeqCst);
            kOfxStatOK
        }
        None => {
            registry::violation(format!("clipReleaseImage of a bad image handle {h:?}"));
            kOfxStatErrBadHandle
        }
    }
}

unsafe extern "C" fn clip_get_region_of_definition(
    h: OfxImageClipHandle,
    _time: OfxTime,
    out: *mut OfxRectD,
) -> OfxStatus {
    let Some(c) = clip(h, "clipGetRegionOfDefinition") else {
        return kOfxStatErrBadHandle;
    };
    let Some(e) = effect(
        c.effect as OfxImageEffectHandle,
        "clipGetRegionOfDefinition",
    ) else {
        return kOfxStatErrBadHandle;
    };
    let Some(setup) = e.setup.as_ref() else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe {
        *out = OfxRectD {
            x1: 0.0,
            y1: 0.0,
            x2: setup.size.0 as f64,
            y2: setup.size.1 as f64,
        }
    };
    kOfxStatOK
}

unsafe extern "C" fn abort(h: OfxImageEffectHandle) -> c_int {
    let Some(e) = effect(h, "abort") else {
        return 0;
    };
    e.abort_polls.fetch_add(1, Ordering::SeqCst);
    e.abort.load(Ordering::SeqCst) as c_int
}

/// Memory from the host: 64-byte aligned, remembered by address.
static ALLOCS: Mutex<Option<HashMap<usize, MemLayout>>> = Mutex::new(None);

fn alloc(n: usize) -> *mut c_void {
    let Ok(layout) = MemLayout::from_size_align(n.max(1), 64) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    if !p.is_null() {
        ALLOCS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(p as usize, layout);
    }
    p.cast()
}

fn free(p: *mut c_void) -> OfxStatus {
    let layout = ALLOCS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .remove(&(p as usize));
    match layout {
        // SAFETY: allocated by `alloc` with this layout.
        Some(l) => unsafe {
            std::alloc::dealloc(p.cast(), l);
            kOfxStatOK
        },
        None => {
            registry::violation(format!("freeing memory the host did not give: {p:?}"));
            kOfxStatErrBadHandle
        }
    }
}

unsafe extern "C" fn memory_alloc(_h: *mut c_void, n: usize, out: *mut *mut c_void) -> OfxStatus {
    if out.is_null() {
        return kOfxStatErrValue;
    }
    let p = alloc(n);
    // SAFETY: the plugin's out pointer.
    unsafe { *out = p };
    if p.is_null() {
        kOfxStatErrMemory
    } else {
        kOfxStatOK
    }
}

unsafe extern "C" fn memory_free(p: *mut c_void) -> OfxStatus {
    free(p)
}

/// Image memory: the allocation and its lock count.
struct ImageMemory {
    ptr: *mut c_void,
    locks: Mutex<u32>,
}

unsafe extern "C" fn image_memory_alloc(
    _h: OfxImageEffectHandle,
    n: usize,
    out: *mut OfxImageMemoryHandle,
) -> OfxStatus {
    if out.is_null() {
        return kOfxStatErrValue;
    }
    let ptr = alloc(n);
    if ptr.is_null() {
        return kOfxStatErrMemory;
    }
    let m = Box::into_raw(Box::new(ImageMemory {
        ptr,
        locks: Mutex::new(0),
    }));
    registry::add(m as usize, Kind::ImageMemory);
    // SAFETY: the plugin's out pointer.
    unsafe { *out = m.cast() };
    kOfxStatOK
}

fn image_memory<'a>(h: OfxImageMemoryHandle, what: &str) -> Option<&'a ImageMemory> {
    if !registry::is(h as usize, Kind::ImageMemory) {
        registry::violation(format!("{what}: bad image memory handle {h:?}"));
        return None;
    }
    // SAFETY: registered handles point to live, boxed image memory.
    Some(unsafe { &*(h as *const ImageMemory) })
}

unsafe extern "C" fn image_memory_free(h: OfxImageMemoryHandle) -> OfxStatus {
    let Some(m) = image_memory(h, "imageMemoryFree") else {
        return kOfxStatErrBadHandle;
    };
    free(m.ptr);
    registry::remove(h as usize);
    // SAFETY: created by Box::into_raw in image_memory_alloc.
    drop(unsafe { Box::from_raw(h as *mut ImageMemory) });
    kOfxStatOK
}

unsafe extern "C" fn image_memory_lock(
    h: OfxImageMemoryHandle,
    out: *mut *mut c_void,
) -> OfxStatus {
    let Some(m) = image_memory(h, "imageMemoryLock") else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    *m.locks.lock().unwrap() += 1;
    // SAFETY: the plugin's out pointer.
    unsafe { *out = m.ptr };
    kOfxStatOK
}

unsafe extern "C" fn image_memory_unlock(h: OfxImageMemoryHandle) -> OfxStatus {
    let Some(m) = image_memory(h, "imageMemoryUnlock") else {
        return kOfxStatErrBadHandle;
    };
    let mut locks = m.locks.lock().unwrap();
    if *locks == 0 {
        registry::violation("imageMemoryUnlock without a lock".into());
        return kOfxStatErrBadHandle;
    }
    *locks -= 1;
    kOfxStatOK
}

pub static EFFECT_SUITE: OfxImageEffectSuiteV1 = OfxImageEffectSuiteV1 {
    getPropertySet: Some(get_property_set),
    getParamSet: Some(get_param_set),
    clipDefine: Some(clip_define),
    clipGetHandle: Some(clip_get_handle),
    clipGetPropertySet: Some(clip_get_property_set),
    clipGetImage: Some(clip_get_image),
    clipReleaseImage: Some(clip_release_image),
    clipGetRegionOfDefinition: Some(clip_get_region_of_definition),
    abort: Some(abort),
    imageMemoryAlloc: Some(image_memory_alloc),
    imageMemoryFree: Some(image_memory_free),
    imageMemoryLock: Some(image_memory_lock),
    imageMemoryUnlock: Some(image_memory_unlock),
};

static MEMORY_SUITE: OfxMemorySuiteV1 = OfxMemorySuiteV1 {
    memoryAlloc: Some(memory_alloc),
    memoryFree: Some(memory_free),
};

unsafe extern "C" fn multi_thread(
    func: OfxThreadFunctionV1,
    n: c_uint,
    arg: *mut c_void,
) -> OfxStatus {
    let Some(func) = func else {
        return kOfxStatErrValue;
    };
    let n = n.max(1);
    // A spawned thread asking for threads runs the work itself.
    if THREAD_INDEX.with(Cell::get).is_some() {
        for i in 0..n {
            // SAFETY: the plugin's function and argument.
            unsafe { func(i, n, arg) };
        }
        return kOfxStatOK;
    }
    let arg = arg as usize;
    let ctx = RENDER.with(|r| {
        r.borrow()
            .as_ref()
            .map(|c| (c.effect, c.time, c.scale, c.output as usize))
    });
    std::thread::scope(|scope| {
        for i in 0..n {
            scope.spawn(move || {
                THREAD_INDEX.with(|t| t.set(Some(i)));
                // Spawned threads work for the render that spawned them.
                RENDER.with(|r| {
                    *r.borrow_mut() = ctx.map(|(effect, time, scale, output)| RenderCtx {
                        effect,
                        time,
                        scale,
                        output: output as *mut Buffer,
                    })
                });
                // SAFETY: the plugin's function and argument.
                unsafe { func(i, n, arg as *mut c_void) };
            });
        }
    });
    kOfxStatOK
}

unsafe extern "C" fn multi_thread_num_cpus(n: *mut c_uint) -> OfxStatus {
    if n.is_null() {
        return kOfxStatErrValue;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    // SAFETY: the plugin's out pointer.
    unsafe { *n = cpus as c_uint };
    kOfxStatOK
}

unsafe extern "C" fn multi_thread_index(i: *mut c_uint) -> OfxStatus {
    if i.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe { *i = THREAD_INDEX.with(Cell::get).unwrap_or(0) };
    kOfxStatOK
}

unsafe extern "C" fn multi_thread_is_spawned_thread() -> c_int {
    THREAD_INDEX.with(Cell::get).is_some() as c_int
}

/// A recursive mutex.
struct HostMutex {
    state: Mutex<(Option<ThreadId>, c_int)>,
    free: Condvar,
}

fn host_mutex<'a>(h: OfxMutexHandle, what: &str) -> Option<&'a HostMutex> {
    if !registry::is(h as usize, Kind::Mutex) {
        registry::violation(format!("{what}: bad mutex handle {h:?}"));
        return None;
    }
    // SAFETY: registered handles point to live, boxed mutexes.
    Some(unsafe { &*(h as *const HostMutex) })
}

unsafe extern "C" fn mutex_create(out: *mut OfxMutexHandle, lock_count: c_int) -> OfxStatus {
    if out.is_null() {
        return kOfxStatErrValue;
    }
    let owner = (lock_count > 0).then(|| std::thread::current().id());
    let m = Box::into_raw(Box::new(HostMutex {
        state: Mutex::new((owner, lock_count.max(0))),
        free: Condvar::new(),
    }));
    registry::add(m as usize, Kind::Mutex);
    // SAFETY: the plugin's out pointer.
    unsafe { *out = m.cast() };
    kOfxStatOK
}

unsafe extern "C" fn mutex_destroy(h: OfxMutexHandle) -> OfxStatus {
    if host_mutex(h, "mutexDestroy").is_none() {
        return kOfxStatErrBadHandle;
    }
    registry::remove(h as usize);
    // SAFETY: created by Box::into_raw in mutex_create.
    drop(unsafe { Box::from_raw(h as *mut HostMutex) });
    kOfxStatOK
}

fn lock_mutex(h: OfxMutexHandle, wait: bool) -> OfxStatus {
    let Some(m) = host_mutex(h, "mutexLock") else {
        return kOfxStatErrBadHandle;
    };
    let me = std::thread::current().id();
    let mut st = m.state.lock().unwrap();
    loop {
        match st.0 {
            None => {
                *st = (Some(me), 1);
                return kOfxStatOK;
            }
            Some(owner) if owner == me => {
                st.1 += 1;
                return kOfxStatOK;
            }
            Some(_) if !wait => return kOfxStatFailed,
            Some(_) => st = m.free.wait(st).unwrap(),
        }
    }
}

unsafe extern "C" fn mutex_lock(h: OfxMutexHandle) -> OfxStatus {
    lock_mutex(h, true)
}

unsafe extern "C" fn mutex_try_lock(h: OfxMutexHandle) -> OfxStatus {
    lock_mutex(h, false)
}

unsafe extern "C" fn mutex_unlock(h: OfxMutexHandle) -> OfxStatus {
    let Some(m) = host_mutex(h, "mutexUnLock") else {
        return kOfxStatErrBadHandle;
    };
    let mut st = m.state.lock().unwrap();
    if st.0 != Some(std::thread::current().id()) {
        registry::violation("mutexUnLock by a thread that does not hold it".into());
        return kOfxStatErrBadHandle;
    }
    st.1 -= 1;
    if st.1 == 0 {
        st.0 = None;
        m.free.notify_one();
    }
    kOfxStatOK
}

static THREAD_SUITE: OfxMultiThreadSuiteV1 = OfxMultiThreadSuiteV1 {
    multiThread: Some(multi_thread),
    multiThreadNumCPUs: Some(multi_thread_num_cpus),
    multiThreadIndex: Some(multi_thread_index),
    multiThreadIsSpawnedThread: Some(multi_thread_is_spawned_thread),
    mutexCreate: Some(mutex_create),
    mutexDestroy: Some(mutex_destroy),
    mutexLock: Some(mutex_lock),
    mutexUnLock: Some(mutex_unlock),
    mutexTryLock: Some(mutex_try_lock),
};

/// Messages for no effect (a NULL handle is allowed).
pub static UNOWNED: Mutex<Vec<Event>> = Mutex::new(Vec::new());

fn record_for(h: *mut c_void, ev: Event) {
    if registry::is(h as usize, Kind::Effect) {
        // SAFETY: a registered effect.
        unsafe { &*(h as *const Effect) }.shared.record(ev);
    } else {
        UNOWNED.lock().unwrap().push(ev);
    }
}

pub unsafe extern "C" fn shim_message(
    h: *mut c_void,
    kind: *const c_char,
    id: *const c_char,
    text: *const c_char,
    persistent: c_int,
) -> OfxStatus {
    let kind = cstr(kind).unwrap_or_default().to_string();
    let ev = Event::Message {
        effect: h as usize,
        persistent: persistent != 0,
        kind: kind.clone(),
        id: cstr(id).unwrap_or_default().to_string(),
        text: cstr(text).unwrap_or_default().to_string(),
    };
    record_for(h, ev);
    if kind.as_bytes() == kOfxMessageQuestion.to_bytes() {
        kOfxStatReplyYes
    } else {
        kOfxStatOK
    }
}

unsafe extern "C" fn clear_persistent_message(h: *mut c_void) -> OfxStatus {
    record_for(h, Event::ClearMessage(h as usize));
    kOfxStatOK
}

unsafe extern "C" fn progress_start_v1(h: *mut c_void, label: *const c_char) -> OfxStatus {
    let label = cstr(label).unwrap_or_default().to_string();
    record_for(h, Event::ProgressStart(h as usize, label));
    if let Some(e) = effect(h.cast(), "progressStart") {
        *e.progress_bar.lock().unwrap() = Some(0);
    }
    kOfxStatOK
}

unsafe extern "C" fn progress_start_v2(
    h: *mut c_void,
    label: *const c_char,
    _id: *const c_char,
) -> OfxStatus {
    // SAFETY: as v1.
    unsafe { progress_start_v1(h, label) }
}

unsafe extern "C" fn progress_update(h: *mut c_void, done: f64) -> OfxStatus {
    record_for(h, Event::ProgressUpdate(h as usize, done));
    let Some(e) = effect(h.cast(), "progressUpdate") else {
        return kOfxStatErrBadHandle;
    };
    let n = e.progress_updates.fetch_add(1, Ordering::SeqCst) + 1;
    if *e.abort_on_update.lock().unwrap() == Some(n) {
        *e.abort_raised.lock().unwrap() = Some(Instant::now());
        e.abort.store(true, Ordering::SeqCst);
    }
    // Natron's GUI: no bar yet (see `HostConfig::late_progress`).
    let late = e.shared.config.late_progress;
    let no_bar = late > 0 && {
        let mut bar = e.progress_bar.lock().unwrap();
        match bar.as_mut() {
            Some(n) => {
                *n += 1;
                *n <= late
            }
            None => true,
        }
    };
    // v1: "ReplyNo: the user cancelled".
    if e.abort.load(Ordering::SeqCst) || no_bar {
        kOfxStatReplyNo
    } else {
        kOfxStatOK
    }
}

unsafe extern "C" fn progress_end(h: *mut c_void) -> OfxStatus {
    record_for(h, Event::ProgressEnd(h as usize));
    if let Some(e) = effect(h.cast(), "progressEnd") {
        *e.progress_bar.lock().unwrap() = None;
    }
    kOfxStatOK
}

static PROGRESS_V1: OfxProgressSuiteV1 = OfxProgressSuiteV1 {
    progressStart: Some(progress_start_v1),
    progressUpdate: Some(progress_update),
    progressEnd: Some(progress_end),
};

static PROGRESS_V2: OfxProgressSuiteV2 = OfxProgressSuiteV2 {
    progressStart: Some(progress_start_v2),
    progressUpdate: Some(progress_update),
    progressEnd: Some(progress_end),
};

/// The tables that need the shim's functions, built once.
struct ShimSuites {
    param: OfxParameterSuiteV1,
    message_v1: OfxMessageSuiteV1,
    message_v2: OfxMessageSuiteV2,
}

// SAFETY: tables of functions that any thread may call.
unsafe impl Send for ShimSuites {}
// SAFETY: as above.
unsafe impl Sync for ShimSuites {}

fn shim_suites() -> &'static ShimSuites {
    static S: OnceLock<ShimSuites> = OnceLock::new();
    S.get_or_init(|| {
        let shim = super::compile::shim();
        ShimSuites {
            param: super::params::suite(shim),
            message_v1: OfxMessageSuiteV1 {
                message: Some(shim.message),
            },
            message_v2: OfxMessageSuiteV2 {
                message: Some(shim.message),
                setPersistentMessage: Some(shim.set_persistent_message),
                clearPersistentMessage: Some(clear_persistent_message),
            },
        }
    })
}

/// `OfxHost::fetchSuite`: the suites above; NULL for any other.
pub unsafe extern "C" fn fetch_suite(
    host: OfxPropertySetHandle,
    name: *const c_char,
    version: c_int,
) -> *const c_void {
    if !registry::is(host as usize, Kind::Props) {
        registry::violation(format!("fetchSuite with a bad host handle {host:?}"));
        return std::ptr::null();
    }
    // SAFETY: a registered property set.
    let owner = unsafe { &*(host as *const PropSet) }.owner;
    if owner == 0 {
        registry::violation("fetchSuite with a property set that is not the host's".into());
        return std::ptr::null();
    }
    // SAFETY: a host's property set lives no longer than its `Shared`.
    let shared = unsafe { &*(owner as *const Shared) };
    let name = cstr(name).unwrap_or_default();
    let is = |c: &CStr| name.as_bytes() == c.to_bytes();
    let p: *const c_void = match version {
        1 if is(kOfxPropertySuite) => (&super::props::SUITE as *const OfxPropertySuiteV1).cast(),
        1 if is(kOfxImageEffectSuite) => (&EFFECT_SUITE as *const OfxImageEffectSuiteV1).cast(),
        1 if is(kOfxParameterSuite) => (&shim_suites().param as *const OfxParameterSuiteV1).cast(),
        1 if is(kOfxMemorySuite) => (&MEMORY_SUITE as *const OfxMemorySuiteV1).cast(),
        1 if is(kOfxMultiThreadSuite) => (&THREAD_SUITE as *const OfxMultiThreadSuiteV1).cast(),
        1 if is(kOfxMessageSuite) => (&shim_suites().message_v1 as *const OfxMessageSuiteV1).cast(),
        2 if is(kOfxMessageSuite) => (&shim_suites().message_v2 as *const OfxMessageSuiteV2).cast(),
        1 if is(kOfxProgressSuite) => (&PROGRESS_V1 as *const OfxProgressSuiteV1).cast(),
        2 if is(kOfxProgressSuite) => (&PROGRESS_V2 as *const OfxProgressSuiteV2).cast(),
        _ => std::ptr::null(),
    };
    shared.record(Event::Suite(name.to_string(), version, !p.is_null()));
    p
}
