// Counting host↔device traffic (runtime.h's device_traffic): every place that
// moves bytes between host and device memory, or waits for a device, says so
// here, and asks first whether a CUDA graph capture forbids it.
#pragma once

namespace bnforge::detail {

void count_host_to_device();
// A read back: a copy to the host, which waits for the device.
void count_device_to_host();

// Whether this thread's CUDA stream (set_cuda_stream) is being captured into a
// graph; an Error when any bnforge call on it would break the capture (the
// legacy stream while another capture runs, or an invalidated capture).
bool cuda_stream_capturing();

}  // namespace bnforge::detail
