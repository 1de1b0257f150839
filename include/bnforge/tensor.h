// bnforge::Tensor — an owning or borrowed n-d array with logical shape and strides.
#pragma once
#include <bnforge/dtype.h>
#include <bnforge/error.h>

#include <memory>
#include <vector>

struct DLManagedTensor;  // <dlpack/dlpack.h>

namespace bnforge {

// A handle, like torch::Tensor: copies share the same storage. Shape and
// strides (in elements) are in logical order (N, C, spatial...) whatever the
// layout; the layout only decides the default strides of new tensors.
class Tensor {
public:
    Tensor() = default;  // undefined

    static Tensor empty(std::vector<int64_t> shape, DType dtype, Device device = Device::cpu(),
                        Layout layout = Layout::NCHW);
    // A view of memory the caller owns and keeps alive; dense in `layout`.
    static Tensor from_blob(void* data, std::vector<int64_t> shape, DType dtype, Device device,
                            Layout layout = Layout::NCHW);
    // As above with explicit strides (elements, logical order); the layout is
    // inferred: channels-last when C has stride 1 and C > 1.
    static Tensor from_blob_strided(void* data, std::vector<int64_t> shape, std::vector<int64_t> strides,
                                    DType dtype, Device device);
    // Zero-copy import; takes ownership of `managed` (its deleter runs when the
    // last handle goes away). Accepts float32/16, bfloat16, int64 and uint8 with
    // one lane, in kDLCPU, kDLCUDAHost or kDLCUDA memory (the last when the build
    // has CUDA kernels; the memory must belong to the CUDA context the kernels
    // will run in, see set_cuda_stream). If it throws, ownership stays with
    // the caller: the deleter has not run and the caller must still call it.
    static Tensor from_dlpack(DLManagedTensor* managed);
    // Zero-copy export; the returned tensor keeps this storage alive until its deleter is called.
    DLManagedTensor* to_dlpack() const;

    bool defined() const { return static_cast<bool>(storage_); }
    template <class T> T* data() { check_dtype(dtype_of<T>::value); return static_cast<T*>(data_); }
    template <class T> const T* data() const { check_dtype(dtype_of<T>::value); return static_cast<const T*>(data_); }
    void* raw_data() const { return data_; }

    const std::vector<int64_t>& shape() const { return shape_; }
    const std::vector<int64_t>& strides() const { return strides_; }
    int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
    int64_t size(int64_t d) const;
    DType dtype() const { return dtype_; }
    Device device() const { return device_; }
    Layout layout() const { return layout_; }
    int64_t numel() const;
    size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(dtype_); }
    // Dense (no gaps, no overlap) in its layout's dimension order.
    bool is_contiguous() const;
    // The slice at `index` of dimension `dim`, one rank lower, sharing this
    // storage (as torch::Tensor::select). Not for OpenCL buffers, which
    // have no addresses to offset.
    Tensor select(int64_t dim, int64_t index) const;

    // Copies between devices are explicit: to(), copy_() — kernels never move
    // a tensor between host and device behind the caller's back. On a GPU
    // device, data() is the device address (as PyTorch's data_ptr()), and
    // fill_/item/set_item go through a host copy (tests and tools).
    Tensor to(Device device) const;
    Tensor clone() const;                  // same shape, dtype, device, layout; new storage
    Tensor contiguous(Layout layout) const;  // a dense copy in `layout` (or *this when already so)
    void copy_(const Tensor& src);         // element-wise copy; shapes must match, dtypes may differ
    void fill_(double value);

    // Element access by logical index, converting to/from double (tests, tools).
    double item(const std::vector<int64_t>& index) const;
    void set_item(const std::vector<int64_t>& index, double value);

    bool same_storage(const Tensor& other) const { return storage_ && storage_ == other.storage_; }

private:
    struct Storage;
    void check_dtype(DType requested) const;
    void copy_across_devices(const Tensor& src);

    std::shared_ptr<Storage> storage_;
    void* data_ = nullptr;
    std::vector<int64_t> shape_;
    std::vector<int64_t> strides_;
    DType dtype_ = DType::Float32;
    Device device_;
    Layout layout_ = Layout::NCHW;
};

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape, Layout layout);

}  // namespace bnforge
