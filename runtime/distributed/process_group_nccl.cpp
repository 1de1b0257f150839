// The NCCL process group: SyncBatchNorm's statistics travel between GPUs over
// NCCL, while the MPI bootstrap group hands out the communicator's unique id.
//
// A dead or diverged peer does not make NCCL fail: its kernel just never
// finishes. So, like PyTorch's ProcessGroupNCCL watchdog, every collective
// waits by polling, with a deadline, and checks NCCL's asynchronous error
// state while it does; on either failure the communicator is aborted and the
// caller gets a bnforge::Error instead of a hang.
#include "mpi_process_group.h"

#include <bnforge/runtime.h>

#include "check.h"
#include "traffic.h"

#if BNFORGE_WITH_NCCL

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <thread>

#define BNF_NCCL_AT_LEAST(major, minor) (NCCL_VERSION_CODE >= NCCL_VERSION(major, minor, 0))

namespace bnforge {

namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

void check_cuda(cudaError_t rc, const char* call) {
    if (rc == cudaSuccess) return;
    throw Error(std::string("ProcessGroup(nccl): ") + call + " failed: " + cudaGetErrorString(rc));
}

// The result code only names a class of failure; NCCL's last error says which.
std::string nccl_message(ncclResult_t rc, ncclComm_t comm) {
    std::string text = ncclGetErrorString(rc);
#if BNF_NCCL_AT_LEAST(2, 13)
    const char* last = ncclGetLastError(comm);
    if (last && *last) text += std::string(" (") + last + ")";
#else
    (void)comm;
#endif
    return text;
}

void check_nccl(ncclResult_t rc, const char* call, ncclComm_t comm = nullptr) {
    if (rc == ncclSuccess) return;
    throw Error(std::string("ProcessGroup(nccl): ") + call + " failed: " + nccl_message(rc, comm));
}

bool nccl_in_progress(ncclResult_t state) {
#if BNF_NCCL_AT_LEAST(2, 14)
    return state == ncclInProgress;
#else
    (void)state;
    return false;
#endif
}

int select_device(int requested) {
    BNF_CHECK(requested >= -1, "ProcessGroup::nccl: device must be a CUDA device or -1, got " << requested);
    int device = requested;
    if (device < 0) check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    int count = 0;
    check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    BNF_CHECK(device < count, "ProcessGroup::nccl: device " << device << " does not exist (this process sees "
                                                             << count << " CUDA devices)");
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    return device;
}

// An NCCL communicator over the ranks of `comm`, from rank 0's unique id. The
// ranks first agree that all of them are ready (`local_error` is this rank's
// failure so far, empty when none), so a failure on any rank throws on every
// rank rather than leaving the others blocked in MPI. ncclCommInitRank itself
// is collective and has no timeout: a rank that fails inside it can still
// leave its peers waiting there.
ncclComm_t create_comm(MPI_Comm comm, int rank, int size, std::string local_error, const char* what) {
    ncclUniqueId id{};
    if (local_error.empty() && rank == 0) {
        const ncclResult_t rc = ncclGetUniqueId(&id);
        if (rc != ncclSuccess) local_error = "ProcessGroup(nccl): ncclGetUniqueId failed: " + nccl_message(rc, nullptr);
    }
    int ok = local_error.empty(), all_ok = 0;
    check_mpi(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
    if (!ok) throw Error(local_error);
    BNF_CHECK(all_ok, what << ": another rank failed to set up its CUDA device or the NCCL id (its own error says why)");
    check_mpi(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm), "MPI_Bcast");
    ncclComm_t nccl = nullptr;
    check_nccl(ncclCommInitRank(&nccl, size, id, rank), "ncclCommInitRank");
    return nccl;
}

}  // namespace

// One thread at a time per group, as with MPI's collectives. The collective
// calls themselves block (NCCL's default communicator mode), so only what
// they enqueue is covered by the deadline.
class NcclProcessGroup final : public ProcessGroup {
public:
    // Takes ownership of `comm`; `device` is its CUDA device.
    NcclProcessGroup(std::shared_ptr<MpiProcessGroup> bootstrap, ncclComm_t comm, int device,
                     std::chrono::milliseconds timeout)
        : ProcessGroup(bootstrap->rank(), bootstrap->size()),
          bootstrap_(std::move(bootstrap)), comm_(comm), device_(device), timeout_(timeout) {
        // Non-blocking: legacy default-stream work elsewhere in the process must
        // neither delay the statistics nor be delayed by a stuck collective.
        const cudaError_t rc = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
        if (rc != cudaSuccess) (void)ncclCommAbort(comm_);
        check_cuda(rc, "cudaStreamCreateWithFlags");
    }

    ~NcclProcessGroup() override {
        // Errors are dropped: a destructor cannot report them, and at exit the
        // CUDA runtime may already be unloading.
        (void)cudaSetDevice(device_);
        if (!aborted_) (void)ncclCommDestroy(comm_);
        if (scratch_) (void)cudaFree(scratch_);
        if (before_) (void)cudaEventDestroy(before_);
        if (after_) (void)cudaEventDestroy(after_);
        (void)cudaStreamDestroy(stream_);
    }

    std::string backend() const override { return "nccl"; }

    std::shared_ptr<ProcessGroup> split(const std::vector<int>& ranks) override {
        require_live("split");
        const int position = split_position(ranks);
        MPI_Comm sub = bootstrap_->split_comm(ranks);
        std::shared_ptr<MpiProcessGroup> sub_bootstrap;
        if (sub != MPI_COMM_NULL) sub_bootstrap = std::make_shared<MpiProcessGroup>(sub, timeout_);
        check_cuda(cudaSetDevice(device_), "cudaSetDevice");
        ncclComm_t sub_comm = nullptr;
#if BNF_NCCL_AT_LEAST(2, 18)
        // Reuses the parent's connections where it can; non-members get no communicator.
        check_nccl(ncclCommSplit(comm_, position >= 0 ? 0 : NCCL_SPLIT_NOCOLOR, position, &sub_comm, nullptr),
                   "ncclCommSplit", comm_);
#else
        (void)position;
        if (sub_bootstrap) {
            sub_comm = create_comm(sub, sub_bootstrap->rank(), sub_bootstrap->size(), "", "ProcessGroup(nccl)::split");
        }
#endif
        if (!sub_bootstrap) return nullptr;
        return std::make_shared<NcclProcessGroup>(std::move(sub_bootstrap), sub_comm, device_, timeout_);
    }

    void all_gather(const double* send, double* recv, size_t count) override {
        collective("all_gather", count, [&](Clock::time_point start) {
            const size_t total = count * static_cast<size_t>(size());
            double* gathered = scratch(total);
            // In place: this rank's slice of the result is its send buffer.
            double* mine = gathered + count * static_cast<size_t>(rank());
            detail::count_host_to_device();
            check_cuda(cudaMemcpyAsync(mine, send, count * sizeof(double), cudaMemcpyHostToDevice, stream_),
                       "cudaMemcpyAsync");
            check_nccl(ncclAllGather(mine, gathered, count, ncclDouble, comm_, stream_), "ncclAllGather", comm_);
            finish(start, recv, gathered, total);
        });
    }

    void all_reduce_sum(double* data, size_t count) override {
        collective("all_reduce_sum", count, [&](Clock::time_point start) {
            double* sums = scratch(count);
            detail::count_host_to_device();
            check_cuda(cudaMemcpyAsync(sums, data, count * sizeof(double), cudaMemcpyHostToDevice, stream_),
                       "cudaMemcpyAsync");
            check_nccl(ncclAllReduce(sums, sums, count, ncclDouble, ncclSum, comm_, stream_), "ncclAllReduce", comm_);
            finish(start, data, sums, count);
        });
    }

    // CUDA tensors in place on the device: stream-ordered after the kernels
    // that wrote them and before the ones that read the result, without a host
    // synchronisation. A peer that dies here stalls the device stream, and
    // the next host collective (SyncBatchNorm's handshake, which waits with
    // the deadline) reports it.
    void all_gather(const Tensor& send, Tensor& recv) override {
        if (!send.device().is_cuda()) return ProcessGroup::all_gather(send, recv);
        BNF_CHECK(send.dtype() == DType::Float64 && recv.dtype() == DType::Float64 && send.is_contiguous() &&
                      recv.is_contiguous() && recv.device() == send.device() &&
                      recv.numel() == send.numel() * size(),
                  "ProcessGroup(nccl)::all_gather: expected dense float64 CUDA tensors, the receiving one "
                      << size() << " times the sending one");
        const auto count = static_cast<size_t>(send.numel());
        collective("all_gather", count, [&](Clock::time_point) {
            ordered_on_device([&] {
                check_nccl(ncclAllGather(send.raw_data(), recv.raw_data(), count, ncclDouble, comm_, stream_),
                           "ncclAllGather", comm_);
            });
        });
    }

    void all_reduce_sum(Tensor& data) override {
        if (!data.device().is_cuda()) return ProcessGroup::all_reduce_sum(data);
        BNF_CHECK(data.dtype() == DType::Float64 && data.is_contiguous(),
                  "ProcessGroup(nccl)::all_reduce_sum: expected a dense float64 tensor");
        const auto count = static_cast<size_t>(data.numel());
        collective("all_reduce_sum", count, [&](Clock::time_point) {
            ordered_on_device([&] {
                check_nccl(ncclAllReduce(data.raw_data(), data.raw_data(), count, ncclDouble, ncclSum, comm_, stream_),
                           "ncclAllReduce", comm_);
            });
        });
    }

private:
    // Runs `enqueue` on the group's stream between the kernels' stream
    // (bnforge::cuda_stream()) and itself, through events: the collective
    // starts after the work already queued there and the next kernel waits for it.
    template <typename Enqueue>
    void ordered_on_device(Enqueue&& enqueue) {
        auto kernels = static_cast<cudaStream_t>(cuda_stream());
        if (!before_) check_cuda(cudaEventCreateWithFlags(&before_, cudaEventDisableTiming), "cudaEventCreate");
        if (!after_) check_cuda(cudaEventCreateWithFlags(&after_, cudaEventDisableTiming), "cudaEventCreate");
        check_cuda(cudaEventRecord(before_, kernels), "cudaEventRecord");
        check_cuda(cudaStreamWaitEvent(stream_, before_, 0), "cudaStreamWaitEvent");
        enqueue();
        check_cuda(cudaEventRecord(after_, stream_), "cudaEventRecord");
        check_cuda(cudaStreamWaitEvent(kernels, after_, 0), "cudaStreamWaitEvent");
    }

    void require_live(const char* op) const {
        BNF_CHECK(!aborted_, "ProcessGroup(nccl)::" << op << ": the communicator was aborted by an earlier failure (rank "
                                                    << rank() << " of " << size() << "); create a new group");
    }

    // Any failure inside a collective leaves this rank out of step with its
    // peers, so the communicator is never trusted again: it is aborted, which
    // also stops this rank's NCCL kernel if it is still waiting on a peer.
    template <typename Body>
    void collective(const char* op, size_t count, Body&& body) {
        require_live(op);
        BNF_CHECK(count <= SIZE_MAX / sizeof(double) / static_cast<size_t>(size()),
                  "ProcessGroup(nccl)::" << op << ": " << count << " values per rank is too many");
        if (count == 0) return;
        BNF_CHECK(!detail::cuda_stream_capturing(),
                  "ProcessGroup(nccl)::" << op << " waits for its result on the host, which cannot be captured "
                                         << "into a CUDA graph (SyncBatchNorm over more than one rank is not capturable)");
        const Clock::time_point start = Clock::now();
        try {
            check_cuda(cudaSetDevice(device_), "cudaSetDevice");
            body(start);
        } catch (const std::exception& e) {
            (void)ncclCommAbort(comm_);
            aborted_ = true;
            throw Error(std::string(e.what()) + " (in " + op + " on rank " + std::to_string(rank()) + " of " +
                        std::to_string(size()) + "; the communicator is now aborted)");
        }
    }

    double* scratch(size_t count) {
        if (count > scratch_count_) {
            // Every collective is waited for, so nothing on the stream still uses the old buffer.
            if (scratch_) check_cuda(cudaFree(scratch_), "cudaFree");
            scratch_ = nullptr;
            scratch_count_ = 0;
            void* memory = nullptr;
            check_cuda(cudaMalloc(&memory, count * sizeof(double)), "cudaMalloc");
            scratch_ = static_cast<double*>(memory);
            scratch_count_ = count;
        }
        return scratch_;
    }

    // The copy back waits until the collective is known to be complete: into
    // pageable memory cudaMemcpyAsync blocks the host until it is done, which
    // would turn a stuck collective into a hang, and after an abort it would
    // write the caller's buffer after the caller was told the call failed.
    void finish(Clock::time_point start, double* host, const double* device, size_t count) {
        wait(start);
        detail::count_device_to_host();
        check_cuda(cudaMemcpyAsync(host, device, count * sizeof(double), cudaMemcpyDeviceToHost, stream_),
                   "cudaMemcpyAsync");
        check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }

    // cudaStreamSynchronize cannot be interrupted, so the stream is polled;
    // between polls NCCL's asynchronous errors are checked and the deadline kept.
    void wait(Clock::time_point start) {
        // Statistics collectives take tens of microseconds: sleeping from the
        // first poll would add more latency than the collective itself.
        constexpr auto spin = std::chrono::microseconds(200);
        constexpr auto nap = std::chrono::microseconds(50);
        for (;;) {
            const cudaError_t done = cudaStreamQuery(stream_);
            if (done == cudaSuccess) return;
            if (done != cudaErrorNotReady) check_cuda(done, "cudaStreamQuery");
            ncclResult_t state = ncclSuccess;
            check_nccl(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError", comm_);
            if (state != ncclSuccess && !nccl_in_progress(state)) {
                throw Error("ProcessGroup(nccl): NCCL reported an error: " + nccl_message(state, comm_));
            }
            const Clock::duration elapsed = Clock::now() - start;
            if (elapsed > timeout_) {
                throw Error("ProcessGroup(nccl): timed out after " + std::to_string(timeout_.count()) +
                            " ms (a peer died or the ranks' collective calls diverged)");
            }
            if (elapsed < spin) {
                std::this_thread::yield();
            } else {
                std::this_thread::sleep_for(nap);
            }
        }
    }

    std::shared_ptr<MpiProcessGroup> bootstrap_;  // same ranks, same order; carries splits
    ncclComm_t comm_;
    int device_;
    std::chrono::milliseconds timeout_;
    cudaStream_t stream_ = nullptr;
    double* scratch_ = nullptr;  // device copy of the host arrays, grown as needed
    cudaEvent_t before_ = nullptr, after_ = nullptr;  // ordering with the kernels' stream
    size_t scratch_count_ = 0;
    bool aborted_ = false;  // comm_ is gone: ncclCommAbort frees it
};

}  // namespace detail

bool ProcessGroup::nccl_available() { return true; }

std::shared_ptr<ProcessGroup> ProcessGroup::nccl(std::shared_ptr<ProcessGroup> bootstrap, NcclOptions options) {
    BNF_CHECK(bootstrap, "ProcessGroup::nccl: the bootstrap group is null");
    detail::MpiProcessGroup& mpi = detail::as_mpi(*bootstrap, "ProcessGroup::nccl");
    std::shared_ptr<detail::MpiProcessGroup> owned_mpi(std::move(bootstrap), &mpi);
    // Local failures are held back until every rank has said whether it is ready.
    std::string local_error;
    int device = -1;
    try {
        BNF_CHECK(options.timeout.count() > 0,
                  "ProcessGroup::nccl: the timeout must be positive, got " << options.timeout.count() << " ms");
        device = detail::select_device(options.device);
    } catch (const std::exception& e) {
        local_error = e.what();
    }
    ncclComm_t comm = detail::create_comm(mpi.comm(), mpi.rank(), mpi.size(), local_error, "ProcessGroup::nccl");
    return std::make_shared<detail::NcclProcessGroup>(std::move(owned_mpi), comm, device, options.timeout);
}

}  // namespace bnforge

#else  // !BNFORGE_WITH_NCCL

namespace bnforge {

bool ProcessGroup::nccl_available() { return false; }

std::shared_ptr<ProcessGroup> ProcessGroup::nccl(std::shared_ptr<ProcessGroup>, NcclOptions) {
    throw Error("ProcessGroup::nccl: bnforge was built without NCCL (no nccl.h/libnccl found at configure time)");
}

}  // namespace bnforge

#endif  // BNFORGE_WITH_NCCL
