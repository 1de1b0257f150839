// load_safetensors on hostile files. The first input byte picks the form:
// the rest of the input as the file, or a file assembled from fuzzed fields
// (structure-aware): entries whose names repeat, dtypes valid, unknown or of
// the wrong JSON type, shapes empty, negative or huge, data_offsets
// overlapping, reversed or past the data, a __metadata__ entry, and an 8-byte
// header length that may lie. Every outcome is a StateDict or a
// bnforge::Error; each tensor returned is read in full.
#include "fuzz_util.h"

#include <fuzzer/FuzzedDataProvider.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iterator>

namespace {

using nlohmann::json;

json fuzzed_shape(FuzzedDataProvider& in) {
    if (in.ConsumeIntegralInRange(0, 15) == 0) return json("not a shape");
    json shape = json::array();
    const int dims = in.ConsumeIntegralInRange(0, 5);
    for (int d = 0; d < dims; d++) {
        switch (in.ConsumeIntegralInRange(0, 7)) {
            case 0: shape.push_back(in.ConsumeIntegral<int64_t>()); break;            // anything, negative too
            case 1: shape.push_back(in.ConsumeIntegral<uint64_t>()); break;           // past int64
            case 2: shape.push_back(int64_t{1} << in.ConsumeIntegralInRange(28, 62)); break;
            case 3: shape.push_back(1.5); break;                                       // not an integer
            default: shape.push_back(in.ConsumeIntegralInRange(0, 9)); break;
        }
    }
    return shape;
}

int64_t element_bytes(const std::string& dtype) {
    if (dtype == "F32") return 4;
    if (dtype == "F16" || dtype == "BF16") return 2;
    if (dtype == "I64" || dtype == "F64") return 8;
    return 1;
}

// A JSON string of any bytes: quotes, backslashes and control characters
// escaped, everything else (invalid UTF-8 included) left for the reader.
std::string quoted(const std::string& text) {
    std::string out = "\"";
    for (unsigned char ch : text) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += static_cast<char>(ch);
        } else if (ch < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", ch);
            out += buf;
        } else {
            out += static_cast<char>(ch);
        }
    }
    return out + "\"";
}

std::string assembled_file(FuzzedDataProvider& in) {
    static const char* names[] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked", "", "__metadata__"};
    static const char* dtypes[] = {"F32", "F16", "BF16", "I64", "U8", "F64", "I32", "BOOL", "f32", "", "F8_E4M3"};
    const uint64_t data_len = in.ConsumeIntegralInRange<uint64_t>(0, 2048);
    std::vector<std::string> entries;  // serialized one by one, so a name can repeat in the text
    uint64_t next = 0;
    const int count = in.ConsumeIntegralInRange(0, 6);
    for (int e = 0; e < count; e++) {
        const std::string name = in.ConsumeBool() ? names[in.ConsumeIntegralInRange<size_t>(0, std::size(names) - 1)]
                                                  : in.ConsumeRandomLengthString(12);
        json value;
        if (name == "__metadata__" && in.ConsumeBool()) {
            value = {{"format", "pt"}};
            if (in.ConsumeBool()) value["key"] = in.ConsumeBool() ? json(1) : json("x");
        } else {
            const std::string dtype = dtypes[in.ConsumeIntegralInRange<size_t>(0, std::size(dtypes) - 1)];
            value["dtype"] = in.ConsumeIntegralInRange(0, 20) == 0 ? json(7) : json(dtype);
            value["shape"] = fuzzed_shape(in);
            // Mostly consistent offsets (so the reader gets past them), else anything.
            uint64_t begin = next, end = next;
            if (value["shape"].is_array()) {
                uint64_t n = 1;
                for (const json& d : value["shape"])
                    n *= d.is_number_unsigned() || d.is_number_integer() ? d.get<uint64_t>() : 1;
                end = begin + n * static_cast<uint64_t>(element_bytes(dtype));
            }
            switch (in.ConsumeIntegralInRange(0, 5)) {
                case 0: begin = in.ConsumeIntegral<uint64_t>(); end = in.ConsumeIntegral<uint64_t>(); break;
                case 1: std::swap(begin, end); break;
                case 2: if (begin > 0) { begin -= 1; end -= 1; } break;  // overlaps the previous entry
                default: break;
            }
            value["data_offsets"] = in.ConsumeIntegralInRange(0, 20) == 0 ? json({begin}) : json({begin, end});
            if (in.ConsumeIntegralInRange(0, 15) == 0) value.erase(in.ConsumeBool() ? "dtype" : "shape");
            next = end;
        }
        entries.push_back(quoted(name) + ":" + value.dump());
    }
    std::string header = "{";
    for (size_t i = 0; i < entries.size(); i++) header += (i ? "," : "") + entries[i];
    header += "}";
    header.append(in.ConsumeIntegralInRange(0, 8), ' ');
    uint64_t length = header.size();
    switch (in.ConsumeIntegralInRange(0, 9)) {
        case 0: length = in.ConsumeIntegral<uint64_t>(); break;  // huge, or short of the header
        case 1: length = header.size() + in.ConsumeIntegralInRange<uint64_t>(1, 64); break;
        default: break;
    }
    std::string file(8, '\0');
    for (int b = 0; b < 8; b++) file[b] = static_cast<char>((length >> (8 * b)) & 0xff);
    file += header;
    const std::vector<uint8_t> data = in.ConsumeBytes<uint8_t>(data_len);
    file.append(data.begin(), data.end());
    return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::string file;
    if (data[0] & 1) {
        file.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
    } else {
        FuzzedDataProvider in(data + 1, size - 1);
        file = assembled_file(in);
    }
    const std::string& path = fuzzutil::write_memory_file(file.data(), file.size());
    try {
        const bnforge::StateDict tensors = bnforge::load_safetensors(path);
        for (const auto& [name, t] : tensors) fuzzutil::touch_elements(t);
        bnforge::load_safetensors_metadata(path);
    } catch (const bnforge::Error&) {
    }
    return 0;
}
