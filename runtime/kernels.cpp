#include "kernels.h"

#include "check.h"
#include "halide_hooks.h"
#include "device.h"
#include "kernel_headers.h"
#include "traffic.h"

#include <bnforge/runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <string_view>
#include <unordered_map>

namespace bnforge::detail {

namespace {

constexpr DType dtype_from_tag_f32 = DType::Float32;
constexpr DType dtype_from_tag_f16 = DType::Float16;
constexpr DType dtype_from_tag_bf16 = DType::BFloat16;
constexpr Layout layout_from_tag_nchw = Layout::NCHW;
constexpr Layout layout_from_tag_nhwc = Layout::NHWC;
constexpr Device::Kind device_from_tag_cpu = Device::Kind::CPU;
constexpr Device::Kind device_from_tag_cuda = Device::Kind::CUDA;
constexpr Device::Kind device_from_tag_opencl = Device::Kind::OpenCL;

std::vector<KernelEntry> build_table() {
    std::vector<KernelEntry> table;
#define BNFORGE_KERNEL(pipeline, device, dtype, layout, fusion, schedule, name)                       \
    table.push_back({Pipeline::pipeline, device_from_tag_##device, dtype_from_tag_##dtype,            \
                     layout_from_tag_##layout, Fusion::fusion, #schedule, #name, &name##_argv,        \
                     &name##_metadata});
// Per-channel kernels have no activation dtype or layout: float64 (their statistics) and NCHW stand in.
#define BNFORGE_CHANNEL_KERNEL(pipeline, device, variant, schedule, name)                                   \
    table.push_back({Pipeline::pipeline, device_from_tag_##device, DType::Float64, Layout::NCHW, Fusion::none, \
                     #schedule, #name, &name##_argv, &name##_metadata, #variant});
#define BNFORGE_STREAMING_KERNEL(pipeline, device, dtype, layout, fusion, name)                        \
    table.push_back({Pipeline::pipeline, device_from_tag_##device, dtype_from_tag_##dtype,            \
                     layout_from_tag_##layout, Fusion::fusion, "manual", #name, &name##_argv,         \
                     &name##_metadata, kStreamingVariant});
#include "kernel_registry.inc"
#undef BNFORGE_STREAMING_KERNEL
#undef BNFORGE_CHANNEL_KERNEL
#undef BNFORGE_KERNEL
    return table;
}

}  // namespace

halide_type_t halide_type_of(DType dtype) {
    switch (dtype) {
        case DType::Float32: return {halide_type_float, 32, 1};
        case DType::Float16: return {halide_type_float, 16, 1};
        case DType::BFloat16: return {halide_type_bfloat, 16, 1};
        case DType::UInt8: return {halide_type_uint, 8, 1};
        case DType::Float64: return {halide_type_float, 64, 1};
        case DType::Int64: return {halide_type_int, 64, 1};
    }
    return {};
}

namespace {

int32_t checked_int32(int64_t v, const char* arg, const char* what) {
    BNF_CHECK(v >= INT32_MIN && v <= INT32_MAX, arg << ": " << what << " " << v
                                                    << " exceeds the kernels' 32-bit dimension range");
    return static_cast<int32_t>(v);
}


}  // namespace

void init_buffer(halide_buffer_t& buf, void* data, Device device, halide_type_t type, int dims,
                 halide_dimension_t* dim) {
    buf = halide_buffer_t{};
    if (device.is_cpu()) {
        buf.host = static_cast<uint8_t*>(data);
    } else {
        buf.device = reinterpret_cast<uint64_t>(data);
        buf.device_interface = device_interface(device);
    }
    buf.type = type;
    buf.dimensions = dims;
    buf.dim = dim;
}

const std::vector<KernelEntry>& kernel_table() {
    static const std::vector<KernelEntry> table = build_table();
    return table;
}

namespace {

// Every lookup key of the table, hashed: a small call looks up two to four
// kernels, and a scan of the ~800 entries was a fifth of its time.
struct KernelKey {
    Pipeline pipeline;
    Device::Kind device;
    DType dtype;
    Layout layout;
    Fusion fusion;
    std::string_view schedule;
    std::string_view variant;
    bool operator==(const KernelKey& o) const {
        return pipeline == o.pipeline && device == o.device && dtype == o.dtype && layout == o.layout &&
               fusion == o.fusion && schedule == o.schedule && variant == o.variant;
    }
};

struct KernelKeyHash {
    size_t operator()(const KernelKey& k) const {
        size_t h = std::hash<std::string_view>()(k.schedule) ^ (std::hash<std::string_view>()(k.variant) << 1);
        for (const int field : {static_cast<int>(k.pipeline), static_cast<int>(k.device), static_cast<int>(k.dtype),
                                static_cast<int>(k.layout), static_cast<int>(k.fusion)})
            h = h * 31 + static_cast<size_t>(field);
        return h;
    }
};

const KernelEntry* lookup(const KernelKey& key) {
    static const auto index = [] {
        std::unordered_map<KernelKey, const KernelEntry*, KernelKeyHash> map;
        for (const KernelEntry& k : kernel_table())
            map.emplace(KernelKey{k.pipeline, k.device, k.dtype, k.layout, k.fusion, k.schedule, k.variant}, &k);
        return map;
    }();
    const auto it = index.find(key);
    return it == index.end() ? nullptr : it->second;
}

}  // namespace

const KernelEntry& find_kernel(Pipeline pipeline, Device device, DType dtype, Layout layout, Fusion fusion) {
    return find_kernel(pipeline, device, dtype, layout, fusion, selected_kernel_schedule());
}

const KernelEntry& find_kernel(Pipeline pipeline, Device device, DType dtype, Layout layout, Fusion fusion,
                               const std::string& schedule) {
    // A variant missing from the schedule's set is an Error rather than a
    // silent fall back to manual.
    if (const KernelEntry* k = lookup({pipeline, device.kind, dtype, layout, fusion, schedule, ""})) return *k;
    if (schedule != "manual") {
        throw Error(std::string("no ") + to_string(pipeline) + " kernel was built with the " + schedule +
                    " schedule for device " + device.str() + ", dtype " + bnforge::to_string(dtype) + ", layout " +
                    bnforge::to_string(layout) + ", fusion " + to_string(fusion) +
                    " (autoscheduled kernels are float32 only, and each autoscheduler schedules CPUs or GPUs or "
                    "both; set_kernel_schedule(\"manual\") for the others)");
    }
    throw Error(std::string("no ") + to_string(pipeline) + " kernel was built for device " + device.str() +
                ", dtype " + bnforge::to_string(dtype) + ", layout " + bnforge::to_string(layout) +
                ", fusion " + to_string(fusion) + " (see BNFORGE_DTYPES / BNFORGE_LAYOUTS)");
}

const KernelEntry* find_streaming_kernel(Pipeline pipeline, DType dtype, Layout layout, Fusion fusion) {
    return lookup({pipeline, Device::Kind::CPU, dtype, layout, fusion, "manual", kStreamingVariant});
}

const KernelEntry& find_channel_kernel(Pipeline pipeline, Device device, const std::string& variant) {
    // As the table lists them (build_table): float64, NCHW, no fusion, manual.
    if (const KernelEntry* k =
            lookup({pipeline, device.kind, DType::Float64, Layout::NCHW, Fusion::none, "manual", variant}))
        return *k;
    throw Error(std::string("no ") + to_string(pipeline) + " kernel was built for device " + device.str() +
                " and variant " + variant + " (see bnforge_add_channel_family in generators/CMakeLists.txt)");
}

namespace {

// Logical (N, C, spatial...) strides of `x` merged into one spatial stride;
// returns false when the spatial dims do not form a single strided run.
bool merged_spatial(const Tensor& x, int64_t& spatial, int64_t& inner_stride) {
    spatial = 1;
    inner_stride = 1;
    bool first = true;
    for (int64_t d = x.dim() - 1; d >= 2; d--) {
        const int64_t extent = x.shape()[d], stride = x.strides()[d];
        if (extent == 1) continue;
        if (first) {
            inner_stride = stride;
            first = false;
        } else if (stride != inner_stride * spatial) {
            return false;
        }
        spatial *= extent;
    }
    return true;
}

}  // namespace

namespace {

// The kernel buffer's dimensions of x in `kernel_layout`, each checked
// against the kernels' 32-bit range (an Error naming `arg` and the value).
void batch_dims(const Tensor& x, Layout kernel_layout, const char* arg, halide_dimension_t dims[3]) {
    int64_t spatial = 1, inner = 1;
    BNF_CHECK(merged_spatial(x, spatial, inner), arg << ": spatial dimensions are not one strided run");
    const int64_t n = x.shape()[0], c = x.shape()[1];
    const int64_t stride_n = x.strides()[0], stride_c = x.strides()[1];
    if (kernel_layout == Layout::NCHW) {
        BNF_CHECK(spatial == 1 || inner == 1, arg << ": NCHW kernels need spatial stride 1, got " << inner);
        dims[0] = {0, checked_int32(spatial, arg, "spatial size"), 1, 0};
        dims[1] = {0, checked_int32(c, arg, "channels"), checked_int32(stride_c, arg, "channel stride"), 0};
    } else {
        BNF_CHECK(c == 1 || stride_c == 1, arg << ": NHWC kernels need channel stride 1, got " << stride_c);
        dims[0] = {0, checked_int32(c, arg, "channels"), 1, 0};
        dims[1] = {0, checked_int32(spatial, arg, "spatial size"), checked_int32(inner, arg, "spatial stride"), 0};
    }
    dims[2] = {0, checked_int32(n, arg, "batch size"), checked_int32(stride_n, arg, "batch stride"), 0};
}

}  // namespace

Layout kernel_layout_for(const Tensor& x, const char* arg) {
    if (x.numel() == 0) return x.layout();  // no kernel reads an empty tensor, whatever its strides
    int64_t spatial = 1, inner = 1;
    BNF_CHECK(merged_spatial(x, spatial, inner),
              arg << ": spatial dimensions must be laid out as one strided run (dense H, W); got strides "
                  << format_shape(x.strides()));
    const int64_t channels = x.shape()[1];
    // Every extent and stride the kernels will take is checked here, before any output is allocated.
    auto checked = [&](Layout layout) {
        halide_dimension_t dims[3];
        batch_dims(x, layout, arg, dims);
        return layout;
    };
    // Memory that reads the same both ways goes to the kernel with the longer contiguous run.
    if (spatial == 1) return checked(Layout::NHWC);
    if (channels == 1) return checked(Layout::NCHW);
    if (inner == 1) return checked(Layout::NCHW);
    if (x.strides()[1] == 1) return checked(Layout::NHWC);
    throw Error(std::string(arg) + ": unsupported strides " + format_shape(x.strides()) + " for shape " +
                format_shape(x.shape()) + "; expected spatial stride 1 (NCHW) or channel stride 1 (NHWC)");
}

void make_batch_view(BatchView& view, const Tensor& x, Layout kernel_layout, const char* arg) {
    view.kernel_layout = kernel_layout;
    view.dtype = x.dtype();
    batch_dims(x, kernel_layout, arg, view.dims);
    init_buffer(view.buf, x.raw_data(), x.device(), halide_type_of(x.dtype()), 3, view.dims);
    // The CUDA context hooks run the next kernel on the device of its tensors.
    if (x.device().is_cuda()) set_current_cuda_device(x.device().index);
}

Tensor empty_mask_for(const BatchView& view, Device device) {
    const int64_t mask_rows = (view.dims[2].extent + kMaskBatchRows - 1) / kMaskBatchRows;
    return Tensor::empty({mask_rows, view.dims[1].extent, view.dims[0].extent}, DType::UInt8, device);
}

ChannelBuffer::ChannelBuffer(const float* data, int64_t channels) {
    dim = {0, checked_int32(channels, "channels", "count"), 1, 0};
    init_buffer(buf, const_cast<float*>(data), Device::cpu(), {halide_type_float, 32, 1}, 1, &dim);
}

ChannelBuffer::ChannelBuffer(const double* data, int64_t channels) {
    dim = {0, checked_int32(channels, "channels", "count"), 1, 0};
    init_buffer(buf, const_cast<double*>(data), Device::cpu(), {halide_type_float, 64, 1}, 1, &dim);
}

namespace {
thread_local const KernelEntry* t_last_invoked = nullptr;

// The CUDA devices (bit i: cuda:i) each kernel has run on: Halide loads a
// kernel's module on its first call there, which a graph capture forbids.
std::vector<std::atomic<uint64_t>>& run_masks() {
    static std::vector<std::atomic<uint64_t>> masks(kernel_table().size());
    return masks;
}

std::atomic<uint64_t>& devices_run_on(const KernelEntry& kernel) {
    std::vector<std::atomic<uint64_t>>& masks = run_masks();
    const size_t index = static_cast<size_t>(&kernel - kernel_table().data());
    BNF_ASSERT(index < masks.size(), "a kernel of the kernel table");
    return masks[index];
}

uint64_t device_bit(int index) { return index >= 0 && index < 64 ? uint64_t{1} << index : 0; }

// What a call inside a CUDA graph capture must not do: load a module, or copy
// per-channel values between host and device (and wait for them).
void check_capturable(const KernelEntry& kernel, const halide_filter_metadata_t* meta, void* const* argv) {
    if (!cuda_stream_capturing()) return;
    const int device = current_cuda_device();
    BNF_CHECK(devices_run_on(kernel).load(std::memory_order_relaxed) & device_bit(device),
              "kernel " << kernel.name << " has not run on cuda:" << device << " yet, and loading its module "
                        << "would break the CUDA graph capture: run the same step once before capturing (README, "
                        << "\"CUDA graphs\")");
    for (int i = 0; i < meta->num_arguments; i++) {
        if (meta->arguments[i].kind != halide_argument_kind_input_buffer &&
            meta->arguments[i].kind != halide_argument_kind_output_buffer)
            continue;
        const auto* b = static_cast<const halide_buffer_t*>(argv[i]);
        BNF_CHECK(!b->host || b->device,
                  "kernel " << kernel.name << " would copy '" << meta->arguments[i].name << "' between host and "
                            << "device, which cannot be captured into a CUDA graph: give per-channel values as "
                            << "tensors on the device");
    }
}

int64_t largest_buffer_elements(const halide_filter_metadata_t* meta, void* const* argv) {
    int64_t largest = 0;
    for (int i = 0; i < meta->num_arguments; i++) {
        if (meta->arguments[i].kind == halide_argument_kind_input_scalar) continue;
        const auto* b = static_cast<const halide_buffer_t*>(argv[i]);
        int64_t elements = 1;
        for (int d = 0; d < b->dimensions; d++) elements *= b->dim[d].extent;
        largest = std::max(largest, elements);
    }
    return largest;
}
}  // namespace

bool run_serially(int64_t elements) { return elements < kSerialBelowElements || num_threads() == 1; }

const KernelEntry* last_invoked_kernel() { return t_last_invoked; }

void forget_cuda_kernel_runs() {
    for (std::atomic<uint64_t>& mask : run_masks()) mask.store(0);
}

namespace {

constexpr int kMaxArguments = 32;  // the widest kernel takes 18

// Which entry of a call's argument list feeds each kernel argument, as the
// name search found it. Call sites pass the same name pointers every call
// (kernel_abi.h constants, static strings; KernelArg), so the next call of
// the kernel from there checks pointers instead of comparing strings.
struct Binding {
    const KernelEntry* kernel;           // nullptr: an empty slot
    size_t count;                        // entries in the list it was found in
    const char* name[kMaxArguments];     // per kernel argument: its entry's name; nullptr: the user context
    uint8_t entry[kMaxArguments];
};

// The last few kernels this thread called (a training step calls three to
// five), searched by address: no locks, no collisions between two kernels
// called in turn; the oldest makes way.
Binding& binding_slot(const KernelEntry& kernel) {
    constexpr size_t kSlots = 8;
    thread_local Binding slots[kSlots]{};  // zeroed: constant-initialized, no TLS guard
    thread_local size_t oldest = 0;
    for (Binding& b : slots)
        if (b.kernel == &kernel) return b;
    Binding& b = slots[oldest];
    oldest = (oldest + 1) % kSlots;
    b.kernel = nullptr;  // not yet found for this kernel
    return b;
}

// argv from the remembered binding; false (argv partly filled) when this
// list differs from the one it was found in.
bool bind_remembered(const Binding& b, const KernelEntry& kernel, const halide_filter_metadata_t* meta,
                     const KernelArg* first, size_t count, size_t present, void* user_context_slot,
                     void** argv) {
    if (b.kernel != &kernel || b.count != count) return false;
    size_t matched = 0;
    for (int i = 0; i < meta->num_arguments; i++) {
        if (!b.name[i]) {
            argv[i] = user_context_slot;
            continue;
        }
        const KernelArg& arg = first[b.entry[i]];
        if (arg.name != b.name[i]) return false;
        void* value = meta->arguments[i].kind == halide_argument_kind_input_scalar
                          ? const_cast<halide_scalar_value_t*>(arg.scalar)
                          : static_cast<void*>(arg.buffer);
        if (!value) return false;
        argv[i] = value;
        matched++;
    }
    return matched == present;
}

}  // namespace

void invoke(const KernelEntry& kernel, std::initializer_list<KernelArg> args) {
    install_halide_hooks();
    note_kernel_call();
    if (*kernel.variant == '\0' || std::string_view(kernel.variant) == kStreamingVariant) t_last_invoked = &kernel;
    const halide_filter_metadata_t* meta = kernel.metadata_fn();
    CallContext context;
    void* user_context = &context;
    BNF_ASSERT(meta->num_arguments <= kMaxArguments, "at most " << kMaxArguments << " kernel arguments");
    void* argv[kMaxArguments] = {};
    size_t present = 0;
    for (const KernelArg& arg : args) present += (arg.buffer || arg.scalar) ? 1 : 0;
    const KernelArg* const first = args.begin();
    const size_t count = args.size();
    BNF_ASSERT(count <= UINT8_MAX, "at most " << UINT8_MAX << " entries in a kernel's argument list");
    Binding& remembered = binding_slot(kernel);
    if (!bind_remembered(remembered, kernel, meta, first, count, present, &user_context, argv)) {
        // By name. Call sites list arguments in the kernel's order, so each
        // search starts after the last match and the usual call compares each
        // name once. A name given twice leaves `matched` short of `present`.
        Binding found{};
        found.kernel = &kernel;
        found.count = count;
        size_t matched = 0, next = 0;
        for (int i = 0; i < meta->num_arguments; i++) {
            const halide_filter_argument_t& a = meta->arguments[i];
            const bool scalar = a.kind == halide_argument_kind_input_scalar;
            argv[i] = nullptr;
            found.name[i] = nullptr;
            if (scalar && std::strcmp(a.name, "__user_context") == 0) {
                argv[i] = &user_context;
                continue;
            }
            for (size_t step = 0; step < count; step++) {
                const size_t j = (next + step) % count;
                const KernelArg& arg = first[j];
                if (std::strcmp(a.name, arg.name) != 0) continue;
                void* value = scalar ? const_cast<halide_scalar_value_t*>(arg.scalar) : static_cast<void*>(arg.buffer);
                if (!value) continue;  // an absent entry: the variant does not take it
                argv[i] = value;
                found.name[i] = arg.name;
                found.entry[i] = static_cast<uint8_t>(j);
                matched++;
                next = j + 1;
                break;
            }
            BNF_ASSERT(argv[i], "an argument '" << a.name << "' for kernel " << kernel.name);
        }
        BNF_ASSERT(matched == present, "only arguments that kernel " << kernel.name << " takes");
        remembered = found;
    }
    const Device device{kernel.device, 0};
    if (device.is_cpu()) context.serial = run_serially(largest_buffer_elements(meta, argv));
    if (device.is_cuda()) check_capturable(kernel, meta, argv);
    if (!device.is_cpu()) {
        // Host inputs (the per-channel values) must be uploaded: Halide copies a
        // host buffer only when it is marked as written on the host.
        for (int i = 0; i < meta->num_arguments; i++) {
            if (meta->arguments[i].kind != halide_argument_kind_input_buffer) continue;
            auto* b = static_cast<halide_buffer_t*>(argv[i]);
            if (b->host && !b->device) {
                b->set_host_dirty(true);
                count_host_to_device();
            }
        }
    }
    int result = kernel.argv_fn(argv);
    if (!device.is_cpu()) {
        // Per-channel host buffers: results back to the host, device copies released.
        for (const KernelArg& arg : args) {
            halide_buffer_t* b = arg.buffer;
            if (!b || !b->host || !b->device) continue;
            if (result == 0 && b->device_dirty()) {
                count_device_to_host();
                result = halide_copy_to_host(user_context, b);
            }
            halide_device_free(user_context, b);
        }
    }
    if (result == 0 && device.is_cuda()) {
        const uint64_t bit = device_bit(current_cuda_device());
        std::atomic<uint64_t>& run_on = devices_run_on(kernel);
        if (!(run_on.load(std::memory_order_relaxed) & bit)) run_on.fetch_or(bit, std::memory_order_relaxed);
    }
    if (result != 0) {
        throw Error(std::string("kernel ") + kernel.name + " failed (Halide error " + std::to_string(result) +
                    "): " + (context.error.empty() ? "no message" : context.error));
    }
}

}  // namespace bnforge::detail
