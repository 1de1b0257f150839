// A process-wide size threshold of the runtime (the one-pass limits, the
// streaming-store limit): a default derived from the machine, replaced for a
// whole process by an environment variable, and set or reset at run time.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <optional>

namespace bnforge::detail {

class ByteLimit {
public:
    // `env`: the variable read once, at construction; `default_bytes`: the
    // value without it, and after set(std::nullopt).
    ByteLimit(const char* env, size_t (*default_bytes)()) : default_bytes_(default_bytes) {
        const char* value = std::getenv(env);
        bytes_ = value ? std::strtoull(value, nullptr, 10) : default_bytes();
    }
    void set(std::optional<size_t> bytes) { bytes_ = bytes ? *bytes : default_bytes_(); }
    size_t get() const { return bytes_; }

private:
    size_t (*default_bytes_)();
    std::atomic<size_t> bytes_;
};

}  // namespace bnforge::detail
