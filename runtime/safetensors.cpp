// safetensors reader and writer.
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then
// the data region. The reader treats every file as hostile: each field is
// validated before use, all offsets are checked against the real file size,
// and the tensors must tile the data region exactly (no overlaps, no holes).
#include <bnforge/state_dict.h>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader/writer copies raw bytes and needs a little-endian host"
#endif

namespace bnforge {
namespace {

using json = nlohmann::json;

// The reference implementation refuses headers above 100 MB too; a state
// dict header is a few kB, so anything near this is an attack or corruption.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;
constexpr const char* kMetadataKey = "__metadata__";

const char* safetensors_dtype(DType dtype) {
    switch (dtype) {
        case DType::Float32: return "F32";
        case DType::Float16: return "F16";
        case DType::BFloat16: return "BF16";
        case DType::Int64: return "I64";
        case DType::UInt8: return "U8";
        case DType::Float64:  // the kernels' per-channel moments and sums, never module state
            throw Error("save_safetensors: float64 tensors are not supported (checkpoints hold float32, float16, "
                        "bfloat16, int64 and uint8)");
    }
    throw Error("save_safetensors: invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

bool parse_safetensors_dtype(const std::string& code, DType* out) {
    static const std::pair<const char*, DType> kCodes[] = {
        {"F32", DType::Float32}, {"F16", DType::Float16}, {"BF16", DType::BFloat16}, {"I64", DType::Int64}, {"U8", DType::UInt8}};
    for (const auto& [name, dtype] : kCodes) {
        if (code == name) {
            *out = dtype;
            return true;
        }
    }
    return false;
}

std::string errno_text() { return std::strerror(errno); }

// Builds messages that always say which call and which file failed.
struct Context {
    const char* who;
    std::string path;

    [[noreturn]] void fail(const std::string& what) const {
        throw Error(std::string(who) + ": '" + path + "': " + what);
    }
    [[noreturn]] void fail(const std::string& tensor, const std::string& what) const {
        fail("tensor '" + tensor + "': " + what);
    }
};

// Describes a JSON value for an error message without echoing containers,
// which an attacker controls and could make arbitrarily large or deep.
std::string describe(const json& value) {
    if (value.is_primitive()) {
        std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
        if (text.size() > 40) text = text.substr(0, 40) + "...";
        return std::string(value.type_name()) + " " + text;
    }
    return std::string("an ") + value.type_name();
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

// ---- reading ---------------------------------------------------------------

class InputFile {
public:
    explicit InputFile(const Context& ctx) : ctx_(ctx), stream_(ctx.path, std::ios::binary) {
        if (!stream_.is_open()) ctx_.fail("cannot open for reading: " + errno_text());
        stream_.seekg(0, std::ios::end);
        const std::streamoff end = stream_.tellg();
        if (!stream_ || end < 0) ctx_.fail("cannot determine the file size (not a regular file?)");
        size_ = static_cast<uint64_t>(end);
    }

    uint64_t size() const { return size_; }

    // Callers have already checked that [offset, offset + n) lies inside the
    // file; a short read then means the file changed or the device failed.
    void read_at(uint64_t offset, void* out, uint64_t n) {
        if (n == 0) return;
        stream_.clear();
        stream_.seekg(static_cast<std::streamoff>(offset));
        stream_.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
        if (!stream_ || static_cast<uint64_t>(stream_.gcount()) != n)
            ctx_.fail("could not read " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                      " (file shrank or I/O error)");
    }

private:
    const Context& ctx_;
    std::ifstream stream_;
    uint64_t size_ = 0;
};

struct Entry {
    std::string name;
    DType dtype = DType::Float32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;
    uint64_t end = 0;
};

struct Header {
    std::vector<Entry> entries;
    std::map<std::string, std::string> metadata;
    uint64_t data_start = 0;
};

// Parses JSON and rejects duplicate keys at any depth. nlohmann keeps the last
// duplicate silently, which would let two entries claim one name.
json parse_json(const Context& ctx, const std::string& text) {
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    auto track = [&](int, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::object_start) {
            open_objects.emplace_back();
        } else if (event == json::parse_event_t::object_end) {
            open_objects.pop_back();
        } else if (event == json::parse_event_t::key && duplicate.empty() && !open_objects.empty()) {
            const std::string& key = parsed.get_ref<const std::string&>();
            if (!open_objects.back().insert(key).second) duplicate = key;
        }
        return true;
    };
    json header;
    try {
        header = json::parse(text, track);
    } catch (const json::exception& e) {
        ctx.fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (!duplicate.empty()) ctx.fail("header contains the key '" + duplicate + "' more than once");
    return header;
}

uint64_t get_unsigned(const Context& ctx, const std::string& tensor, const std::string& field, const json& value) {
    if (!value.is_number_integer())
        ctx.fail(tensor, field + " is " + describe(value) + ", expected a non-negative integer");
    if (value.is_number_unsigned()) return value.get<uint64_t>();
    const int64_t v = value.get<int64_t>();
    if (v < 0) ctx.fail(tensor, field + " = " + std::to_string(v) + ", expected >= 0");
    return static_cast<uint64_t>(v);
}

const json& get_field(const Context& ctx, const std::string& tensor, const json& entry, const char* field) {
    const auto it = entry.find(field);
    if (it == entry.end()) ctx.fail(tensor, std::string("missing field \"") + field + "\"");
    return *it;
}

std::map<std::string, std::string> parse_metadata(const Context& ctx, const json& value) {
    if (!value.is_object()) ctx.fail(std::string(kMetadataKey) + " is " + describe(value) + ", expected an object");
    std::map<std::string, std::string> metadata;
    for (const auto& [key, item] : value.items()) {
        if (!item.is_string())
            ctx.fail(std::string(kMetadataKey) + " entry '" + key + "' is " + describe(item) + ", expected a string");
        metadata.emplace(key, item.get<std::string>());
    }
    return metadata;
}

Entry parse_entry(const Context& ctx, const std::string& name, const json& value, uint64_t data_size) {
    if (!value.is_object()) ctx.fail(name, "entry is " + describe(value) + ", expected an object");
    Entry entry;
    entry.name = name;

    const json& dtype = get_field(ctx, name, value, "dtype");
    if (!dtype.is_string()) ctx.fail(name, "dtype is " + describe(dtype) + ", expected a string");
    if (!parse_safetensors_dtype(dtype.get<std::string>(), &entry.dtype))
        ctx.fail(name, "dtype " + describe(dtype) + " is not supported, expected F32, F16, BF16, I64 or U8");

    const json& shape = get_field(ctx, name, value, "shape");
    if (!shape.is_array()) ctx.fail(name, "shape is " + describe(shape) + ", expected an array");
    uint64_t numel = 1;
    for (size_t d = 0; d < shape.size(); ++d) {
        const uint64_t extent = get_unsigned(ctx, name, "shape[" + std::to_string(d) + "]", shape[d]);
        if (extent > static_cast<uint64_t>(INT64_MAX))
            ctx.fail(name, "shape[" + std::to_string(d) + "] = " + std::to_string(extent) + " does not fit in int64");
        entry.shape.push_back(static_cast<int64_t>(extent));
    }
    // Zero extents count as 1 here: the tensor's dense strides must still be
    // representable even when it holds no elements.
    bool empty = false;
    for (int64_t extent : entry.shape) {
        empty = empty || extent == 0;
        if (__builtin_mul_overflow(numel, static_cast<uint64_t>(std::max<int64_t>(extent, 1)), &numel))
            ctx.fail(name, "shape " + shape_text(entry.shape) + " has more elements than fit in 64 bits");
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(element_size(entry.dtype)), &nbytes) ||
        nbytes > static_cast<uint64_t>(INT64_MAX))
        ctx.fail(name, "shape " + shape_text(entry.shape) + " is too large (byte size overflows)");
    if (empty) nbytes = 0;

    const json& offsets = get_field(ctx, name, value, "data_offsets");
    if (!offsets.is_array() || offsets.size() != 2)
        ctx.fail(name, "data_offsets is " + describe(offsets) +
                           (offsets.is_array() ? " of " + std::to_string(offsets.size()) + " entries" : "") +
                           ", expected an array [begin, end]");
    entry.begin = get_unsigned(ctx, name, "data_offsets[0]", offsets[0]);
    entry.end = get_unsigned(ctx, name, "data_offsets[1]", offsets[1]);
    const std::string span = "data_offsets [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) + "]";
    if (entry.end < entry.begin) ctx.fail(name, span + " end before begin");
    if (entry.end > data_size)
        ctx.fail(name, span + " reach past the data region of " + std::to_string(data_size) + " bytes");
    if (entry.end - entry.begin != nbytes)
        ctx.fail(name, span + " span " + std::to_string(entry.end - entry.begin) + " bytes, expected " +
                           std::to_string(nbytes) + " for shape " + shape_text(entry.shape) + " and dtype " +
                           safetensors_dtype(entry.dtype));
    return entry;
}

// safetensors forbids both overlaps and unused bytes in the data region.
void check_tiling(const Context& ctx, std::vector<Entry>& entries, uint64_t data_size) {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t covered = 0;
    const Entry* previous = nullptr;
    for (const Entry& e : entries) {
        if (e.begin < covered)
            ctx.fail(e.name, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                 "] overlap tensor '" + previous->name + "' which ends at " + std::to_string(covered));
        if (e.begin > covered)
            ctx.fail(e.name, "data_offsets begin at " + std::to_string(e.begin) + ", expected " +
                                 std::to_string(covered) + " (bytes " + std::to_string(covered) + ".." +
                                 std::to_string(e.begin) + " of the data region belong to no tensor)");
        covered = e.end;
        previous = &e;
    }
    if (covered != data_size)
        ctx.fail("the tensors cover " + std::to_string(covered) + " bytes of the data region, expected all " +
                 std::to_string(data_size) + " (trailing bytes belong to no tensor)");
}

Header read_header(const Context& ctx, InputFile& file) {
    if (file.size() < 8)
        ctx.fail("file is " + std::to_string(file.size()) + " bytes, too short for the 8-byte header length");
    unsigned char prefix[8];
    file.read_at(0, prefix, 8);
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | prefix[i];
    if (header_size > kMaxHeaderBytes)
        ctx.fail("header length " + std::to_string(header_size) + " exceeds the limit of " +
                 std::to_string(kMaxHeaderBytes) + " bytes");
    if (header_size > file.size() - 8)
        ctx.fail("header length " + std::to_string(header_size) + " exceeds the " + std::to_string(file.size() - 8) +
                 " bytes that follow it in the file");

    std::string text(static_cast<size_t>(header_size), '\0');
    file.read_at(8, text.data(), header_size);
    const json root = parse_json(ctx, text);
    if (!root.is_object()) ctx.fail("header is " + describe(root) + ", expected a JSON object");

    Header header;
    header.data_start = 8 + header_size;
    const uint64_t data_size = file.size() - header.data_start;
    for (const auto& [key, value] : root.items()) {
        if (key == kMetadataKey)
            header.metadata = parse_metadata(ctx, value);
        else
            header.entries.push_back(parse_entry(ctx, key, value, data_size));
    }
    check_tiling(ctx, header.entries, data_size);
    return header;
}

// ---- writing -----------------------------------------------------------------

void check_utf8(const char* who, const std::string& path, const std::string& what, const std::string& text) {
    try {
        (void)json(text).dump();
    } catch (const json::exception&) {
        throw Error(std::string(who) + ": '" + path + "': " + what + " is not valid UTF-8");
    }
}

std::string header_bytes(const StateDict& tensors, const std::map<std::string, std::string>& metadata) {
    json header = json::object();
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
        const uint64_t nbytes = tensor.nbytes();
        header[name] = {{"dtype", safetensors_dtype(tensor.dtype())},
                        {"shape", tensor.shape()},
                        {"data_offsets", {offset, offset + nbytes}}};
        offset += nbytes;
    }
    if (!metadata.empty()) header[kMetadataKey] = metadata;
    std::string text = header.dump();
    // Padding keeps the data region 8-byte aligned for readers that map the file.
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
}

void validate_for_save(const std::string& path, const StateDict& tensors,
                       const std::map<std::string, std::string>& metadata) {
    const char* who = "save_safetensors";
    for (const auto& [name, tensor] : tensors) {
        const std::string label = "tensor '" + name + "'";
        if (name == kMetadataKey)
            throw Error(std::string(who) + ": '" + path + "': tensor name '" + name + "' is reserved for metadata");
        check_utf8(who, path, "tensor name", name);
        if (!tensor.defined()) throw Error(std::string(who) + ": '" + path + "': " + label + " is undefined");
        if (!tensor.device().is_cpu())
            throw Error(std::string(who) + ": '" + path + "': " + label + " is on " + tensor.device().str() +
                        ", expected cpu");
    }
    for (const auto& [key, value] : metadata) {
        check_utf8(who, path, "metadata key", key);
        check_utf8(who, path, "metadata value for '" + key + "'", value);
    }
}

// A file written so that a crash at any point leaves either the previous
// file or the new one, whole (torch.save's and SQLite's discipline): the bytes
// go to a temporary file beside the target, which is synced and renamed over
// it, and then the directory is synced so the rename itself is durable. Any
// failure is an Error and removes the temporary file; the target is untouched
// until the rename. A target that exists and is not a regular file (a device
// such as /dev/full, a FIFO) is written in place: replacing it would be wrong.
class AtomicFile {
public:
    explicit AtomicFile(const std::string& path) : path_(path) {
        struct stat st;
        in_place_ = ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
        if (in_place_) {
            fd_ = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
            if (fd_ < 0) fail("cannot open for writing");
            return;
        }
        static std::atomic<unsigned> counter{0};
        for (int attempt = 0; fd_ < 0; attempt++) {
            temp_ = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
            // 0666 less the umask: the new file gets the permissions a plain create would.
            fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (fd_ < 0 && (errno != EEXIST || attempt > 100)) {
                temp_.clear();
                fail("cannot open for writing");
            }
        }
    }
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile() { abandon(); }

    void write(const void* data, size_t bytes) {
        const char* p = static_cast<const char*>(data);
        while (bytes > 0) {
            const ssize_t n = ::write(fd_, p, bytes);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail("write failed");
            p += n;
            bytes -= static_cast<size_t>(n);
        }
    }

    void commit() {
        if (::fsync(fd_) != 0 && !in_place_) fail("sync failed");
        const int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) fail("write failed");
        if (in_place_) return;
        if (::rename(temp_.c_str(), path_.c_str()) != 0) fail("cannot replace the file");
        temp_.clear();
        const std::string dir = parent_directory(path_);
        const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0) fail("cannot sync its directory '" + dir + "'");
        if (::fsync(dir_fd) != 0) {
            const int err = errno;
            ::close(dir_fd);
            errno = err;
            fail("cannot sync its directory '" + dir + "'");
        }
        ::close(dir_fd);
    }

private:
    static std::string parent_directory(const std::string& path) {
        const size_t slash = path.find_last_of('/');
        if (slash == std::string::npos) return ".";
        return slash == 0 ? "/" : path.substr(0, slash);
    }

    void abandon() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        if (!temp_.empty()) ::unlink(temp_.c_str());
        temp_.clear();
    }

    [[noreturn]] void fail(const std::string& what) {
        const std::string reason = errno_text();
        abandon();
        throw Error("save_safetensors: '" + path_ + "': " + what + ": " + reason);
    }

    std::string path_, temp_;
    int fd_ = -1;
    bool in_place_ = false;
};

}  // namespace

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
    // Everything is validated before any file is created.
    validate_for_save(path, tensors, metadata);
    const std::string header = header_bytes(tensors, metadata);

    unsigned char prefix[8];
    uint64_t header_size = header.size();
    for (unsigned char& byte : prefix) {
        byte = static_cast<unsigned char>(header_size & 0xff);
        header_size >>= 8;
    }
    AtomicFile out(path);
    out.write(prefix, 8);
    out.write(header.data(), header.size());
    for (const auto& [name, tensor] : tensors) {
        // Logical row-major order whatever the layout or strides; already
        // dense tensors are aliased, not copied.
        const Tensor dense = tensor.contiguous(Layout::NCHW);
        out.write(dense.raw_data(), dense.nbytes());
    }
    out.commit();
}

StateDict load_safetensors(const std::string& path) {
    const Context ctx{"load_safetensors", path};
    InputFile file(ctx);
    const Header header = read_header(ctx, file);
    StateDict tensors;
    for (const Entry& e : header.entries) {
        Tensor t = Tensor::empty(e.shape, e.dtype);
        file.read_at(header.data_start + e.begin, t.raw_data(), e.end - e.begin);
        tensors.emplace(e.name, std::move(t));
    }
    return tensors;
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
    const Context ctx{"load_safetensors_metadata", path};
    InputFile file(ctx);
    return read_header(ctx, file).metadata;
}

}  // namespace bnforge
