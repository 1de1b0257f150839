// The oneDNN peer: batch normalization primitives of oneDNN 3.x on a CPU
// engine, used the way a oneDNN user builds a layer: primitives, memory
// objects and a user scratchpad are created once (prepare), run() only
// executes the primitives on the slot's memory. The same source serves each
// oneDNN build the bench links (bench/CMakeLists.txt), one per executable.
//
// BN+ReLU is one primitive (fuse_norm_relu, with its workspace). oneDNN's CPU
// batch norm cannot fuse an addend, so ReLU(BN(x) + addend) is BN forward then
// a binary add primitive with an eltwise ReLU post-op, in place on y; its
// backward is an eltwise ReLU backward (relu_use_dst_for_bwd: dy masked by
// y > 0, which is daddend) then BN backward.
#include "bench_api.h"

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace bench {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using flags = dnnl::normalization_flags;
using Args = std::unordered_map<int, dnnl::memory>;

dt to_dnnl(bnforge::DType dtype) {
    switch (dtype) {
        case bnforge::DType::Float32: return dt::f32;
        case bnforge::DType::Float16: return dt::f16;
        case bnforge::DType::BFloat16: return dt::bf16;
        default: throw std::runtime_error("onednn peer: unexpected dtype");
    }
}

tag to_tag(bnforge::Layout layout) { return layout == bnforge::Layout::NHWC ? tag::nhwc : tag::nchw; }

const char* runtime_name(unsigned runtime) {
    switch (runtime) {
        case DNNL_RUNTIME_NONE: return "none";
        case DNNL_RUNTIME_SEQ: return "sequential";
        case DNNL_RUNTIME_OMP: return "OpenMP";
        case DNNL_RUNTIME_TBB: return "TBB";
        case DNNL_RUNTIME_THREADPOOL: return "threadpool";
        case DNNL_RUNTIME_OCL: return "OpenCL";
        case DNNL_RUNTIME_SYCL: return "SYCL";
        default: return "unknown";
    }
}

// The batch-tensor descriptor of a case: (N, C, H, W) in nchw or nhwc.
dnnl::memory::desc data_desc(const Shape& s, bnforge::Layout layout, bnforge::DType dtype) {
    return dnnl::memory::desc({s.n, s.c, s.h, s.w}, to_dnnl(dtype), to_tag(layout));
}

// Zero-copy wrap of the driver's dense tensor (checked against the descriptor's strides).
dnnl::memory wrap(const bnforge::Tensor& t, const dnnl::memory::desc& md, const dnnl::engine& eng) {
    const dnnl::memory::dims want = md.get_strides();
    const auto& strides = t.strides();
    for (int d = 0; d < md.get_ndims(); ++d)
        if (t.shape()[d] > 1 && strides[d] != want[d])
            throw std::runtime_error("onednn peer: input tensor is not dense in the case's layout");
    return dnnl::memory(md, eng, t.raw_data());
}

dnnl::memory::desc channel_desc(int64_t c) { return dnnl::memory::desc({c}, dt::f32, tag::x); }

// A library-allocated buffer, touched once so no timed run pays its page faults.
dnnl::memory fresh(const dnnl::memory::desc& md, const dnnl::engine& eng) {
    dnnl::memory m(md, eng);
    if (md.get_size() > 0) std::memset(m.get_data_handle(), 0, md.get_size());
    return m;
}

bnforge::Tensor view(const dnnl::memory& m, const Shape& s, bnforge::Layout layout, bnforge::DType dtype) {
    return bnforge::Tensor::from_blob_strided(m.get_data_handle(), s.dims(),
                                              bnforge::contiguous_strides(s.dims(), layout), dtype,
                                              bnforge::Device::cpu());
}

std::vector<double> to_vector(const dnnl::memory& m, int64_t c) {
    const float* p = static_cast<const float*>(m.get_data_handle());
    return std::vector<double>(p, p + c);
}

struct Step {
    dnnl::primitive prim;
    std::vector<Args> args;  // per slot
};

// The primitive descriptors of one case (no memory): shared by prepare and unsupported.
struct Pds {
    dnnl::batch_normalization_forward::primitive_desc fwd;
    dnnl::binary::primitive_desc add_relu;                 // fused ops
    dnnl::eltwise_forward::primitive_desc relu_hint;       // fused_backward (hint only)
    dnnl::eltwise_backward::primitive_desc relu_bwd;       // fused_backward
    dnnl::batch_normalization_backward::primitive_desc bwd;  // backward ops
};

dnnl::primitive_attr user_scratchpad() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
}

// A primitive descriptor, or an error that names the primitive oneDNN could not provide.
template <class F>
auto checked(const char* what, const CaseSpec& spec, F make) -> decltype(make()) {
    try {
        return make();
    } catch (const dnnl::error& e) {
        std::string why = std::string(what) + " for " + bnforge::to_string(spec.layout) + "/" +
                          bnforge::to_string(spec.dtype) + ": " + e.what();
        if (e.status == dnnl_unimplemented) why += " (no implementation)";
        throw std::runtime_error(why);
    }
}

Pds make_pds(const CaseSpec& spec, const dnnl::engine& eng) {
    const auto md = data_desc(spec.shape, spec.layout, spec.dtype);
    const float eps = static_cast<float>(kEps);
    const auto attr = user_scratchpad();
    const auto train = dnnl::prop_kind::forward_training;
    Pds p;
    using bn_fwd = dnnl::batch_normalization_forward;
    if (spec.op == Op::eval_forward) {
        p.fwd = checked("batch_normalization_forward(forward_inference)", spec, [&] {
            return bn_fwd::primitive_desc(eng, dnnl::prop_kind::forward_inference, md, md, eps,
                                          flags::use_global_stats | flags::use_scale | flags::use_shift, attr);
        });
        return p;
    }
    if (spec.op == Op::relu_forward) {
        p.fwd = checked("batch_normalization_forward(forward_training, fuse_norm_relu)", spec, [&] {
            return bn_fwd::primitive_desc(eng, train, md, md, eps,
                                          flags::fuse_norm_relu | flags::use_scale | flags::use_shift, attr);
        });
        return p;
    }
    p.fwd = checked("batch_normalization_forward(forward_training)", spec, [&] {
        return bn_fwd::primitive_desc(eng, train, md, md, eps, flags::use_scale | flags::use_shift, attr);
    });
    if (spec.op == Op::fused_forward || spec.op == Op::fused_backward) {
        dnnl::post_ops po;
        po.append_eltwise(dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        dnnl::primitive_attr a = user_scratchpad();
        a.set_post_ops(po);
        p.add_relu = checked("binary(binary_add) with an eltwise_relu post-op", spec, [&] {
            return dnnl::binary::primitive_desc(eng, dnnl::algorithm::binary_add, md, md, md, a);
        });
    }
    if (spec.op == Op::fused_backward) {
        const auto relu = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
        p.relu_hint = checked("eltwise_forward(relu_use_dst_for_bwd)", spec, [&] {
            return dnnl::eltwise_forward::primitive_desc(eng, train, relu, md, md, 0.0f, 0.0f);
        });
        p.relu_bwd = checked("eltwise_backward(relu_use_dst_for_bwd)", spec, [&] {
            return dnnl::eltwise_backward::primitive_desc(eng, relu, md, md, md, 0.0f, 0.0f, p.relu_hint, attr);
        });
    }
    if (spec.op == Op::backward || spec.op == Op::fused_backward)
        p.bwd = checked("batch_normalization_backward(backward)", spec, [&] {
            return dnnl::batch_normalization_backward::primitive_desc(
                eng, dnnl::prop_kind::backward, md, md, md, eps, flags::use_scale | flags::use_shift, p.fwd, attr);
        });
    return p;
}

class DnnlRunner : public Runner {
public:
    DnnlRunner(const CaseSpec& spec, const CaseData& data, const dnnl::engine& eng, dnnl::stream& stream,
               std::set<std::string>& impls)
        : spec_(spec), eng_(eng), stream_(stream) {
        const Pds p = make_pds(spec, eng);
        const auto md = data_desc(spec.shape, spec.layout, spec.dtype);
        const auto cmd = channel_desc(spec.shape.c);
        const int slots = data.slots;
        const Op op = spec.op;
        const std::string where =
            std::string(" (") + bnforge::to_string(spec.layout) + "/" + bnforge::to_string(spec.dtype) + "): ";

        dnnl::memory weight = wrap(data.weight, cmd, eng), bias = wrap(data.bias, cmd, eng);
        const bool fwd_timed = op == Op::train_forward || op == Op::eval_forward || op == Op::fused_forward ||
                               op == Op::relu_forward;
        const bool backward = op == Op::backward || op == Op::fused_backward;
        const bool fused = op == Op::fused_forward || op == Op::fused_backward;

        s_.resize(slots);
        for (int i = 0; i < slots; ++i) {
            Slot& s = s_[i];
            s.x = wrap(data.x.at(i), md, eng);
            if (backward) s.dy = wrap(data.dy.at(i), md, eng);
            if (fused) s.addend = wrap(data.addend.at(i), md, eng);
            if (op == Op::eval_forward) {
                s.mean = wrap(data.running_mean, cmd, eng);
                s.var = wrap(data.running_var, cmd, eng);
            } else {
                s.mean = fresh(p.fwd.mean_desc(), eng);
                s.var = fresh(p.fwd.variance_desc(), eng);
            }
            // y per slot for the forward ops and the fused backward (whose ReLU mask is y > 0);
            // the plain backward only needs the statistics, so its y is one scratch buffer.
            if (fwd_timed || op == Op::fused_backward || i == 0) s.y = fresh(p.fwd.dst_desc(), eng);
            else s.y = s_[0].y;
            if (backward) {
                s.dx = fresh(p.bwd.diff_src_desc(), eng);
                s.dscale = fresh(cmd, eng);
                s.dshift = fresh(cmd, eng);
            }
            if (op == Op::fused_backward) s.g = fresh(p.relu_bwd.diff_src_desc(), eng);
            if (op == Op::relu_forward) s.workspace = fresh(p.fwd.workspace_desc(), eng);
        }

        // Forward (timed, or the one the backward needs).
        Step fwd{dnnl::batch_normalization_forward(p.fwd), {}};
        dnnl::memory fwd_scratch = fresh(p.fwd.scratchpad_desc(), eng);
        for (Slot& s : s_) {
            Args a{{DNNL_ARG_SRC, s.x}, {DNNL_ARG_DST, s.y}, {DNNL_ARG_SCALE, weight}, {DNNL_ARG_SHIFT, bias},
                   {DNNL_ARG_MEAN, s.mean}, {DNNL_ARG_VARIANCE, s.var}, {DNNL_ARG_SCRATCHPAD, fwd_scratch}};
            if (op == Op::relu_forward) a[DNNL_ARG_WORKSPACE] = s.workspace;  // the ReLU mask, for a backward
            fwd.args.push_back(std::move(a));
        }
        impls.insert("batch_normalization_forward" + where + p.fwd.impl_info_str());
        std::vector<Step> forward{fwd};
        if (fused) {
            Step add{dnnl::binary(p.add_relu), {}};
            dnnl::memory add_scratch = fresh(p.add_relu.scratchpad_desc(), eng);
            for (Slot& s : s_)
                add.args.push_back({{DNNL_ARG_SRC_0, s.y}, {DNNL_ARG_SRC_1, s.addend}, {DNNL_ARG_DST, s.y},
                                    {DNNL_ARG_SCRATCHPAD, add_scratch}});
            impls.insert("binary_add+relu" + where + p.add_relu.impl_info_str());
            forward.push_back(std::move(add));
        }

        if (!backward) {
            steps_ = std::move(forward);
            return;
        }
        // The training forward the backward needs, once per slot, untimed.
        for (int i = 0; i < slots; ++i) execute(forward, i);

        if (op == Op::fused_backward) {
            Step relu{dnnl::eltwise_backward(p.relu_bwd), {}};
            dnnl::memory relu_scratch = fresh(p.relu_bwd.scratchpad_desc(), eng);
            for (Slot& s : s_)
                relu.args.push_back({{DNNL_ARG_DST, s.y}, {DNNL_ARG_DIFF_DST, s.dy}, {DNNL_ARG_DIFF_SRC, s.g},
                                     {DNNL_ARG_SCRATCHPAD, relu_scratch}});
            impls.insert("eltwise_backward relu_use_dst" + where + p.relu_bwd.impl_info_str());
            steps_.push_back(std::move(relu));
        }
        Step bwd{dnnl::batch_normalization_backward(p.bwd), {}};
        dnnl::memory bwd_scratch = fresh(p.bwd.scratchpad_desc(), eng);
        for (Slot& s : s_) {
            const dnnl::memory& diff_dst = op == Op::fused_backward ? s.g : s.dy;
            bwd.args.push_back({{DNNL_ARG_SRC, s.x}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_MEAN, s.mean},
                                {DNNL_ARG_VARIANCE, s.var}, {DNNL_ARG_SCALE, weight},
                                {DNNL_ARG_DIFF_SRC, s.dx}, {DNNL_ARG_DIFF_SCALE, s.dscale},
                                {DNNL_ARG_DIFF_SHIFT, s.dshift}, {DNNL_ARG_SCRATCHPAD, bwd_scratch}});
        }
        impls.insert("batch_normalization_backward" + where + p.bwd.impl_info_str());
        steps_.push_back(std::move(bwd));
    }

    void run(int slot) override { execute(steps_, slot); }

    Outputs outputs(int slot) override {
        const Slot& s = s_[slot];
        const int64_t c = spec_.shape.c;
        Outputs o;
        switch (spec_.op) {
            case Op::train_forward:
            case Op::fused_forward:
            case Op::relu_forward:
                o.y = view(s.y, spec_.shape, spec_.layout, spec_.dtype);
                o.mean = to_vector(s.mean, c);
                o.var = to_vector(s.var, c);
                break;
            case Op::eval_forward: o.y = view(s.y, spec_.shape, spec_.layout, spec_.dtype); break;
            case Op::backward:
            case Op::fused_backward:
                o.dx = view(s.dx, spec_.shape, spec_.layout, spec_.dtype);
                if (spec_.op == Op::fused_backward) o.daddend = view(s.g, spec_.shape, spec_.layout, spec_.dtype);
                o.dweight = to_vector(s.dscale, c);
                o.dbias = to_vector(s.dshift, c);
                break;
        }
        return o;
    }

private:
    void execute(std::vector<Step>& steps, int slot) {
        for (Step& st : steps) st.prim.execute(stream_, st.args[slot]);
        stream_.wait();
    }

    struct Slot {
        dnnl::memory x, dy, addend;        // the driver's memory
        dnnl::memory y, mean, var;         // forward outputs (mean/var: running stats for eval)
        dnnl::memory g;                    // fused backward: dy masked by y > 0 (= daddend)
        dnnl::memory dx, dscale, dshift;   // backward outputs
        dnnl::memory workspace;            // relu_forward: fuse_norm_relu's mask
    };
    CaseSpec spec_;
    dnnl::engine eng_;
    dnnl::stream& stream_;
    std::vector<Slot> s_;
    std::vector<Step> steps_;
};

class DnnlImplementation : public Implementation {
public:
    DnnlImplementation() : eng_(dnnl::engine::kind::cpu, 0), stream_(eng_) {}

    std::string name() const override { return BNFORGE_BENCH_DNNL_NAME; }

    // Decided by oneDNN: the case's primitive descriptors are created (no memory).
    std::string unsupported(const CaseSpec& spec) const override {
        if (spec.dtype != bnforge::DType::Float32 && spec.dtype != bnforge::DType::BFloat16 &&
            spec.dtype != bnforge::DType::Float16)
            return std::string("onednn peer: dtype ") + bnforge::to_string(spec.dtype) + " is not an activation dtype";
        try {
            make_pds(spec, eng_);
        } catch (const std::exception& e) {
            return std::string("oneDNN ") + version_str() + " CPU: " + e.what();
        }
        return "";
    }

    // An OpenMP build follows omp_set_num_threads; a TBB (or SYCL-over-TBB)
    // build uses one worker per CPU it may run on, which is the bench's
    // thread count on this 2-CPU machine kind (notes() prints both).
    void set_num_threads(int threads) override { omp_set_num_threads(threads); }

    std::unique_ptr<Runner> prepare(const CaseSpec& spec, const CaseData& data) override {
        return std::make_unique<DnnlRunner>(spec, data, eng_, stream_, impls_);
    }

    std::string notes() const override {
        const dnnl_version_t* v = dnnl::version();
        std::string s = "oneDNN " + version_str() + " (" + BNFORGE_BENCH_DNNL_SOURCE + "), CPU runtime " +
                        runtime_name(v->cpu_runtime) + " (omp_get_max_threads " +
                        std::to_string(omp_get_max_threads()) + ", " +
                        std::to_string(std::thread::hardware_concurrency()) +
                        " CPUs), CPU engine + in-order stream, user scratchpads, all "
                        "outputs preallocated per slot. train_forward: batch_normalization_forward(forward_training, "
                        "use_scale|use_shift) writing y, mean, variance; eval_forward: forward_inference, "
                        "use_global_stats|use_scale|use_shift; backward: batch_normalization_backward(backward, "
                        "use_scale|use_shift) -> diff_src, diff_scale, diff_shift, after one untimed training forward; "
                        "relu_forward: forward_training with fuse_norm_relu (y and a workspace mask); "
                        "fused_forward: BN forward_training into y, then binary_add(y, addend) -> y in place with an "
                        "eltwise_relu post-op; fused_backward: eltwise_backward(relu_use_dst_for_bwd, dst=y) -> "
                        "daddend, then BN backward on daddend.";
        // The driver may ask before any case is prepared: then list what oneDNN
        // picks for a representative shape (its choice follows layout, dtype and ISA).
        std::set<std::string> impls = impls_;
        const char* source = "of the cases run";
        if (impls.empty()) {
            source = "probed at 32x64x56x56";
            for (bnforge::Layout layout : {bnforge::Layout::NCHW, bnforge::Layout::NHWC})
                for (bnforge::DType dtype : {bnforge::DType::Float32, bnforge::DType::BFloat16}) {
                    const CaseSpec spec{{32, 64, 56, 56}, layout, dtype, Op::fused_backward};
                    const std::string where = std::string(" (") + bnforge::to_string(layout) + "/" +
                                              bnforge::to_string(dtype) + "): ";
                    try {
                        const Pds p = make_pds(spec, eng_);
                        impls.insert("batch_normalization_forward" + where + p.fwd.impl_info_str());
                        impls.insert("binary_add+relu" + where + p.add_relu.impl_info_str());
                        impls.insert("eltwise_backward relu_use_dst" + where + p.relu_bwd.impl_info_str());
                        impls.insert("batch_normalization_backward" + where + p.bwd.impl_info_str());
                    } catch (const std::exception& e) {
                        impls.insert(std::string("unsupported") + where + e.what());
                    }
                }
        }
        s += std::string(" Implementations (") + source + "):";
        for (const auto& i : impls) s += " [" + i + "]";
        return s;
    }

private:
    static std::string version_str() {
        const dnnl_version_t* v = dnnl::version();
        return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
    }

    dnnl::engine eng_;
    mutable dnnl::stream stream_;
    std::set<std::string> impls_;
};

}  // namespace

std::unique_ptr<Implementation> make_onednn() { return std::make_unique<DnnlImplementation>(); }

}  // namespace bench
