//! NVIDIA's nvJPEG, loaded when a run asks for it (the vision plugin's `--decode gpu`): baseline
//! JPEGs decoded on the GPU, straight into a libtorch CUDA tensor.
//!
//! The library is found at run time, never linked, so CPU builds and machines without CUDA never
//! need it. Looked for, in order: the path in `DEEPEMBED_NVJPEG`; the dynamic linker's search
//! (`libnvjpeg.so.13`, then `.so.12`: LD_LIBRARY_PATH, the system's CUDA); then beside the
//! libtorch this process runs, where pip puts NVIDIA's libraries (`nvidia/cu13/lib`,
//! `nvidia/nvjpeg/lib`, `torchvision.libs`).
//!
//! The handle uses the first backend nvJPEG accepts of: the hardware decoder (A100, H100 and
//! later), GPU-assisted Huffman decoding, the default. It decodes on a CUDA stream of its own
//! (non-blocking, from the CUDA runtime libtorch loaded), so that a thread preparing the next
//! images decodes while the model's work runs on libtorch's stream, and waits for its stream
//! before it returns: the images are decoded when [`NvJpeg::decode_into`] returns.
//!
//! Safety contract of this module:
//!
//! - Each function pointer is looked up by name in the loaded library (nvJPEG's, or the CUDA
//!   runtime's) and called with the signature nvjpeg.h or cuda_runtime_api.h gives it (unchanged
//!   from CUDA 11 to 13). The libraries stay loaded for as long as the [`NvJpeg`] that owns them.
//! - The handle, the decoding state, the parsed-header object and the stream are created here,
//!   used only through `&mut self` (one thread at a time: `NvJpeg` moves to the preparing
//!   thread, `Send` but not `Sync`), on the device they were made for, and destroyed once, in
//!   `Drop`.
//! - [`NvJpeg::decode_into`] gives nvJPEG device pointers only into `out`, which it checks is a
//!   contiguous CUDA `Uint8` tensor of shape (n, height, width, 3): image `i` at slot `i`, with
//!   the slot's row pitch, after nvJPEG's own header reading says that the image fits the slot.
//!   It waits for its stream before returning, so no work of it is pending afterwards, and the
//!   JPEG bytes (host memory) are no longer read.
//! - Its stream is not ordered with libtorch's. The caller guarantees that no device work is
//!   pending on `out`'s memory when it calls (the vision plugin decodes into buffers of its own
//!   pool: fresh ones after a device-wide synchronisation, returned ones only after the model's
//!   work on them was read back), and libtorch's later work on `out` is queued after the call
//!   returns, so after the decoding.

use std::ffi::{c_int, c_uint, c_void, OsString};
use std::path::PathBuf;

use libloading::Library;
use tch::{Device, Kind, Tensor};

type Handle = *mut c_void;
type State = *mut c_void;
type Stream = *mut c_void;
/// nvjpeg.h's `nvjpegJpegStream_t`: a parsed JPEG header.
type JpegStream = *mut c_void;

/// nvjpeg.h's `nvjpegImage_t`: up to four planes; interleaved RGB uses the first.
#[repr(C)]
struct Image {
    channel: [*mut u8; 4],
    pitch: [usize; 4],
}

/// nvjpeg.h's `NVJPEG_OUTPUT_RGBI`: interleaved RGB, in the first plane.
const OUTPUT_RGBI: c_int = 5;
/// nvjpeg.h's backends, in the order tried: `HARDWARE`, `GPU_HYBRID`, `DEFAULT`.
const BACKENDS: [(c_int, &str); 3] = [(3, "hardware"), (2, "GPU-assisted Huffman"), (0, "default")];

/// The CUDA runtime's `cudaStreamNonBlocking`: no implicit ordering with the legacy stream.
const STREAM_NON_BLOCKING: c_uint = 1;

struct Functions {
    create_ex: unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> c_int,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
    state_create: unsafe extern "C" fn(Handle, *mut State) -> c_int,
    state_destroy: unsafe extern "C" fn(State) -> c_int,
    image_info: unsafe extern "C" fn(Handle, *const u8, usize, *mut c_int, *mut c_int, *mut c_int, *mut c_int) -> c_int,
    batched_initialize: unsafe extern "C" fn(Handle, State, c_int, c_int, c_int) -> c_int,
    batched: unsafe extern "C" fn(Handle, State, *const *const u8, *const usize, *mut Image, Stream) -> c_int,
    jpeg_stream_create: unsafe extern "C" fn(Handle, *mut JpegStream) -> c_int,
    jpeg_stream_destroy: unsafe extern "C" fn(JpegStream) -> c_int,
    parse_header: unsafe extern "C" fn(Handle, *const u8, usize, JpegStream) -> c_int,
    batched_supported: unsafe extern "C" fn(Handle, JpegStream, *mut c_int) -> c_int,
    // The CUDA runtime's.
    set_device: unsafe extern "C" fn(c_int) -> c_int,
    stream_create: unsafe extern "C" fn(*mut Stream, c_uint) -> c_int,
    stream_synchronize: unsafe extern "C" fn(Stream) -> c_int,
    stream_destroy: unsafe extern "C" fn(Stream) -> c_int,
}

/// A loaded nvJPEG with a handle and one decoding state; see the module's contract.
pub struct NvJpeg {
    functions: Functions,
    handle: Handle,
    state: State,
    stream: Stream,
    /// Where [`NvJpeg::takes`] parses headers (hardware backend only).
    header: JpegStream,
    /// The CUDA device it decodes on: made the calling thread's current device before each call
    /// (the handle, state and stream belong to it).
    device: c_int,
    /// The batch size the state was last initialised for.
    batch: Option<usize>,
    backend: &'static str,
    path: String,
    // Last: dropped after the handle, state and stream are destroyed with their functions.
    _library: Library,
    _cuda_runtime: Library,
}

// SAFETY: nvJPEG's handle and state, and a CUDA stream, may be used from any thread as long as
// calls do not overlap, which `&mut self` ensures; `NvJpeg` moves to the thread that prepares
// images and stays there.
unsafe impl Send for NvJpeg {}

impl NvJpeg {
    /// Loads nvJPEG and creates a handle and a decoding state; the error says where it looked.
    /// Loads nvJPEG for CUDA device `device`.
    pub fn load(device: usize) -> Result<NvJpeg, String> {
        NvJpeg::load_first(candidates(std::env::var_os("DEEPEMBED_NVJPEG")), device as c_int)
    }

    /// The first of `candidates` that loads.
    fn load_first(candidates: Vec<OsString>, device: c_int) -> Result<NvJpeg, String> {
        let mut tried = Vec::new();
        for candidate in candidates {
            // SAFETY: loading a library runs its initialisers; nvJPEG's only set up its own
            // state (and load the CUDA runtime, already in the process through libtorch).
            match unsafe { Library::new(&candidate) } {
                Ok(library) => return NvJpeg::open(library, candidate.to_string_lossy().into_owned(), device),
                Err(e) => tried.push(format!("{} ({e})", candidate.to_string_lossy())),
            }
        }
        Err(format!(
            "nvJPEG was not found; tried {}. Install NVIDIA's nvJPEG (pip install nvidia-nvjpeg-cu13 or torchvision \
             beside torch, or the CUDA toolkit), or set DEEPEMBED_NVJPEG to its libnvjpeg.so",
            tried.join(", ")
        ))
    }

    fn open(library: Library, path: String, device: c_int) -> Result<NvJpeg, String> {
        let cuda_runtime = cuda_runtime(&path)?;
        let functions = Functions {
            create_ex: symbol(&library, &path, "nvjpegCreateEx")?,
            destroy: symbol(&library, &path, "nvjpegDestroy")?,
            state_create: symbol(&library, &path, "nvjpegJpegStateCreate")?,
            state_destroy: symbol(&library, &path, "nvjpegJpegStateDestroy")?,
            image_info: symbol(&library, &path, "nvjpegGetImageInfo")?,
            batched_initialize: symbol(&library, &path, "nvjpegDecodeBatchedInitialize")?,
            batched: symbol(&library, &path, "nvjpegDecodeBatched")?,
            jpeg_stream_create: symbol(&library, &path, "nvjpegJpegStreamCreate")?,
            jpeg_stream_destroy: symbol(&library, &path, "nvjpegJpegStreamDestroy")?,
            parse_header: symbol(&library, &path, "nvjpegJpegStreamParseHeader")?,
            batched_supported: symbol(&library, &path, "nvjpegDecodeBatchedSupported")?,
            set_device: symbol(&cuda_runtime, "the CUDA runtime", "cudaSetDevice")?,
            stream_create: symbol(&cuda_runtime, "the CUDA runtime", "cudaStreamCreateWithFlags")?,
            stream_synchronize: symbol(&cuda_runtime, "the CUDA runtime", "cudaStreamSynchronize")?,
            stream_destroy: symbol(&cuda_runtime, "the CUDA runtime", "cudaStreamDestroy")?,
        };
        // SAFETY: a device index; an invalid one is an error status.
        let status = unsafe { (functions.set_device)(device) };
        if status != 0 {
            return Err(format!("the CUDA runtime could not select device {device} (error {status})"));
        }
        let mut stream: Stream = std::ptr::null_mut();
        // SAFETY: `stream` is written on success only.
        let status = unsafe { (functions.stream_create)(&mut stream, STREAM_NON_BLOCKING) };
        if status != 0 {
            return Err(format!("the CUDA runtime could not create a stream for nvJPEG (error {status})"));
        }
        let mut refusals = Vec::new();
        for (backend, name) in BACKENDS {
            let mut handle: Handle = std::ptr::null_mut();
            // SAFETY: null allocators select cudaMalloc and cudaHostAlloc; flags 0 is the
            // default; `handle` is written on success only.
            let status =
                unsafe { (functions.create_ex)(backend, std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut handle) };
            if status != 0 {
                refusals.push(format!("{name}: {}", status_name(status)));
                continue;
            }
            let (mut state, mut header): (State, JpegStream) = (std::ptr::null_mut(), std::ptr::null_mut());
            // SAFETY: `handle` was just created; `state` and `header` are written on success only.
            let status = unsafe {
                match (functions.state_create)(handle, &mut state) {
                    0 => (functions.jpeg_stream_create)(handle, &mut header),
                    failed => failed,
                }
            };
            if status != 0 {
                // SAFETY: each destroyed once if it was created, and not used again.
                unsafe {
                    if !state.is_null() {
                        (functions.state_destroy)(state);
                    }
                    (functions.destroy)(handle);
                    (functions.stream_destroy)(stream);
                }
                return Err(format!("{path}: creating a decoding state failed: {}", status_name(status)));
            }
            return Ok(NvJpeg {
                functions,
                handle,
                state,
                stream,
                header,
                device,
                batch: None,
                backend: name,
                path,
                _library: library,
                _cuda_runtime: cuda_runtime,
            });
        }
        // SAFETY: destroyed once, and not used again.
        unsafe { (functions.stream_destroy)(stream) };
        Err(format!("{path}: no nvJPEG backend could be created ({})", refusals.join("; ")))
    }

    /// Which backend the handle uses, and the library's path, for the log.
    pub fn describe(&self) -> String {
        format!("nvJPEG ({} backend) from {}", self.backend, self.path)
    }

    /// Whether the batched decoder takes `jpeg`. The hardware decoder takes only some JPEGs
    /// (nvJPEG says which after parsing the header), and a batch holding one it refuses fails
    /// whole; the other backends take any JPEG nvJPEG decodes.
    pub fn takes(&mut self, jpeg: &[u8]) -> bool {
        if self.backend != BACKENDS[0].1 {
            return true;
        }
        let mut refused: c_int = -1;
        // SAFETY: `jpeg` is valid for its length during the call, which only reads it; the
        // handle and the parsed-header object are this struct's own, used from one thread
        // (`&mut self`); `refused` is written on success.
        let status = unsafe {
            match (self.functions.parse_header)(self.handle, jpeg.as_ptr(), jpeg.len(), self.header) {
                0 => (self.functions.batched_supported)(self.handle, self.header, &mut refused),
                failed => failed,
            }
        };
        // nvjpeg.h: 0 when the batched decoder supports the image.
        status == 0 && refused == 0
    }

    /// Width and height of a JPEG as nvJPEG reads its header.
    fn size(&self, jpeg: &[u8]) -> Result<(usize, usize), String> {
        let (mut components, mut subsampling) = (0 as c_int, 0 as c_int);
        let (mut widths, mut heights) = ([0 as c_int; 4], [0 as c_int; 4]);
        // SAFETY: `jpeg` is valid for its length; the four output arrays have the
        // NVJPEG_MAX_COMPONENT (4) entries nvjpeg.h asks for; the call only reads the header.
        let status = unsafe {
            (self.functions.image_info)(
                self.handle,
                jpeg.as_ptr(),
                jpeg.len(),
                &mut components,
                &mut subsampling,
                widths.as_mut_ptr(),
                heights.as_mut_ptr(),
            )
        };
        if status != 0 {
            return Err(format!("nvJPEG cannot read the JPEG's header: {}", status_name(status)));
        }
        Ok((widths[0].max(0) as usize, heights[0].max(0) as usize))
    }

    /// Decodes `jpegs` into `out`, a contiguous CUDA `Uint8` tensor (n, height, width, 3): JPEG
    /// `i` as interleaved RGB at the top left of slot `i` (the rest of the slot is left as it
    /// is), on nvJPEG's own stream, and waits for it. No device work may be pending on `out`'s
    /// memory (the module's contract).
    pub fn decode_into(&mut self, jpegs: &[&[u8]], out: &Tensor) -> Result<(), String> {
        let size = out.size();
        let cuda = matches!(out.device(), Device::Cuda(_));
        if !cuda || out.kind() != Kind::Uint8 || !out.is_contiguous() || size.len() != 4 || size[3] != 3 {
            return Err(format!(
                "nvJPEG decodes into a contiguous CUDA uint8 (n, height, width, 3) tensor, not {:?} {:?} {size:?}",
                out.device(),
                out.kind()
            ));
        }
        let (slot_height, slot_width) = (size[1].max(0) as usize, size[2].max(0) as usize);
        if size[0] as usize != jpegs.len() {
            return Err(format!("{} JPEGs for {} slots", jpegs.len(), size[0]));
        }
        if jpegs.is_empty() {
            return Ok(());
        }
        if out.device() != Device::Cuda(self.device as usize) {
            return Err(format!("nvJPEG decodes on cuda:{}, and the output is on {:?}", self.device, out.device()));
        }
        // SAFETY: a device index that worked when the handle was made.
        let status = unsafe { (self.functions.set_device)(self.device) };
        if status != 0 {
            return Err(format!("the CUDA runtime could not select device {} (error {status})", self.device));
        }
        let pitch = slot_width * 3;
        let base = out.data_ptr() as *mut u8;
        let mut images = Vec::with_capacity(jpegs.len());
        for (i, jpeg) in jpegs.iter().enumerate() {
            let (width, height) = self.size(jpeg)?;
            if width > slot_width || height > slot_height {
                return Err(format!("a {width}x{height} JPEG does not fit a {slot_width}x{slot_height} slot"));
            }
            // In bounds: slot `i` of `out`, which has `jpegs.len()` slots of height x pitch bytes.
            let channel = base.wrapping_add(i * slot_height * pitch);
            images.push(Image {
                channel: [channel, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()],
                pitch: [pitch, 0, 0, 0],
            });
        }
        if self.batch != Some(jpegs.len()) {
            // SAFETY: the handle and state are this struct's own; one CPU thread.
            let status = unsafe {
                (self.functions.batched_initialize)(self.handle, self.state, jpegs.len() as c_int, 1, OUTPUT_RGBI)
            };
            if status != 0 {
                self.batch = None;
                return Err(format!("nvJPEG could not prepare a batch of {}: {}", jpegs.len(), status_name(status)));
            }
            self.batch = Some(jpegs.len());
        }
        let data: Vec<*const u8> = jpegs.iter().map(|j| j.as_ptr()).collect();
        let lengths: Vec<usize> = jpegs.iter().map(|j| j.len()).collect();
        // SAFETY: `data` and `lengths` describe `jpegs`, alive for the call, which waits for the
        // decoding below; each image's plane lies inside `out`, checked above to be a CUDA tensor
        // of these slots, with no device work pending on it (the contract).
        let status = unsafe {
            (self.functions.batched)(
                self.handle,
                self.state,
                data.as_ptr(),
                lengths.as_ptr(),
                images.as_mut_ptr(),
                self.stream,
            )
        };
        // SAFETY: the stream is this struct's own. Waited for even after a failure, so that
        // nothing of this call is left running on `out` or the JPEG bytes.
        let synchronized = unsafe { (self.functions.stream_synchronize)(self.stream) };
        if status != 0 || synchronized != 0 {
            // A failed batch leaves the state to be initialised again.
            self.batch = None;
            let why = if status != 0 { status_name(status) } else { format!("CUDA error {synchronized}") };
            return Err(format!("nvJPEG failed to decode a batch of {}: {why}", jpegs.len()));
        }
        Ok(())
    }
}

impl Drop for NvJpeg {
    fn drop(&mut self) {
        // SAFETY: created in `open`, destroyed here once, after the last decoding was waited
        // for; the libraries are still loaded.
        unsafe {
            (self.functions.jpeg_stream_destroy)(self.header);
            (self.functions.state_destroy)(self.state);
            (self.functions.destroy)(self.handle);
            (self.functions.stream_destroy)(self.stream);
        }
    }
}

/// The function `name` of `library`, as the type `F` of the field it fills in [`Functions`].
fn symbol<F: Copy>(library: &Library, path: &str, name: &str) -> Result<F, String> {
    let mut c_name = name.as_bytes().to_vec();
    c_name.push(0);
    // SAFETY: `F` is the signature nvjpeg.h gives `name` (the module's contract); the pointer is
    // used only while `library`, kept beside it in `NvJpeg`, stays loaded.
    unsafe { library.get::<F>(c_name.as_slice()) }.map(|f| *f).map_err(|e| format!("{path} has no {name} ({e})"))
}

/// The CUDA runtime libtorch loaded (the same soname finds the loaded copy), else the one
/// beside nvJPEG at `nvjpeg`, for a stream.
fn cuda_runtime(nvjpeg: &str) -> Result<Library, String> {
    let mut tried = Vec::new();
    let beside = std::path::Path::new(nvjpeg).parent().map(|dir| dir.join("libcudart.so.13").into_os_string());
    for name in [OsString::from("libcudart.so.13"), OsString::from("libcudart.so.12")].into_iter().chain(beside) {
        // SAFETY: the CUDA runtime is already in the process through libtorch's CUDA library;
        // loading it again by soname only takes a reference to it (and nvJPEG, loaded just
        // before, loaded the one beside it).
        match unsafe { Library::new(&name) } {
            Ok(library) => return Ok(library),
            Err(e) => tried.push(format!("{} ({e})", name.to_string_lossy())),
        }
    }
    Err(format!("the CUDA runtime was not found; tried {}", tried.join(", ")))
}

/// Where to look for the library, in order (see the module's comment): only `chosen` (the
/// value of `DEEPEMBED_NVJPEG`) when there is one.
fn candidates(chosen: Option<OsString>) -> Vec<OsString> {
    if let Some(path) = chosen {
        return vec![path];
    }
    let mut found: Vec<OsString> = vec!["libnvjpeg.so.13".into(), "libnvjpeg.so.12".into()];
    // <site-packages>/torch/lib -> <site-packages>
    if let Some(site) = crate::loaded_libtorch_dir().and_then(|lib| lib.parent()?.parent().map(PathBuf::from)) {
        for dir in ["nvidia/cu13/lib", "nvidia/nvjpeg/lib"] {
            for name in ["libnvjpeg.so.13", "libnvjpeg.so.12"] {
                let path = site.join(dir).join(name);
                if path.is_file() {
                    found.push(path.into());
                }
            }
        }
        // torchvision bundles its own copy under a hashed name.
        if let Ok(entries) = std::fs::read_dir(site.join("torchvision.libs")) {
            let mut bundled: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libnvjpeg")))
                .collect();
            bundled.sort();
            found.extend(bundled.into_iter().map(PathBuf::into_os_string));
        }
    }
    found
}

/// nvjpeg.h's `nvjpegStatus_t` names.
fn status_name(status: c_int) -> String {
    let name = match status {
        1 => "NOT_INITIALIZED",
        2 => "INVALID_PARAMETER",
        3 => "BAD_JPEG",
        4 => "JPEG_NOT_SUPPORTED",
        5 => "ALLOCATOR_FAILURE",
        6 => "EXECUTION_FAILED",
        7 => "ARCH_MISMATCH",
        8 => "INTERNAL_ERROR",
        9 => "IMPLEMENTATION_NOT_SUPPORTED",
        10 => "INCOMPLETE_BITSTREAM",
        _ => return format!("status {status}"),
    };
    format!("NVJPEG_STATUS_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_an_error_saying_where_it_looked_and_what_to_do() {
        let chosen = candidates(Some("/nonexistent/libnvjpeg.so.13".into()));
        assert_eq!(chosen, ["/nonexistent/libnvjpeg.so.13"]);
        let err = NvJpeg::load_first(chosen, 0).err().expect("no nvJPEG at that path");
        assert!(err.contains("/nonexistent/libnvjpeg.so.13") && err.contains("DEEPEMBED_NVJPEG"), "{err}");
    }

    #[test]
    fn statuses_have_nvjpegs_names() {
        assert_eq!(status_name(4), "NVJPEG_STATUS_JPEG_NOT_SUPPORTED");
        assert_eq!(status_name(42), "status 42");
    }
}
