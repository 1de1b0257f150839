// Counting host↔device traffic (runtime.h's device_traffic): every place that
// moves bytes between host and device memory, or waits for a device, says so here.
#pragma once

namespace bnforge::detail {

void count_host_to_device();
// A read back: a copy to the host, which waits for the device.
void count_device_to_host();

}  // namespace bnforge::detail
