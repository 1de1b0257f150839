#include "mpi_process_group.h"

#include "check.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace bnforge {

namespace detail {

void check_mpi(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) length = 0;
    throw Error(std::string("ProcessGroup(mpi): ") + call + " failed: " +
                (length ? std::string(text, length) : "error " + std::to_string(rc)));
}

namespace {

void require_mpi_initialized(const char* what) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    BNF_CHECK(initialized && !finalized,
              what << ": MPI is " << (finalized ? "already finalized" : "not initialized (call MPI_Init first)"));
}

// A private duplicate whose errors come back as return codes (MPI's default
// handler aborts the job), so check_mpi can turn them into bnforge::Error.
MPI_Comm private_duplicate(MPI_Comm comm) {
    MPI_Comm dup = MPI_COMM_NULL;
    check_mpi(MPI_Comm_dup(comm, &dup), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    return dup;
}

int comm_rank(MPI_Comm comm) {
    int r = 0;
    check_mpi(MPI_Comm_rank(comm, &r), "MPI_Comm_rank");
    return r;
}

int comm_size(MPI_Comm comm) {
    int s = 0;
    check_mpi(MPI_Comm_size(comm, &s), "MPI_Comm_size");
    return s;
}

// MPI counts are int: large buffers travel in pieces.
constexpr size_t kMaxMpiCount = INT_MAX / 2;

}  // namespace

MpiProcessGroup::MpiProcessGroup(MPI_Comm comm, std::chrono::milliseconds timeout)
    : ProcessGroup(comm_rank(comm), comm_size(comm)), comm_(comm), timeout_(timeout) {}

MpiProcessGroup::~MpiProcessGroup() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

MPI_Comm MpiProcessGroup::split_comm(const std::vector<int>& ranks) const {
    const int position = split_position(ranks);
    MPI_Comm sub = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split(comm_, position >= 0 ? 0 : MPI_UNDEFINED, position, &sub), "MPI_Comm_split");
    if (sub != MPI_COMM_NULL) MPI_Comm_set_errhandler(sub, MPI_ERRORS_RETURN);
    return sub;
}

std::shared_ptr<ProcessGroup> MpiProcessGroup::split(const std::vector<int>& ranks) {
    MPI_Comm sub = split_comm(ranks);
    if (sub == MPI_COMM_NULL) return nullptr;
    return std::make_shared<MpiProcessGroup>(sub, timeout_);
}

void MpiProcessGroup::check_usable(const char* call) const {
    BNF_CHECK(broken_.empty(), "ProcessGroup(mpi)::" << call << ": the group is unusable since " << broken_
                                                     << " timed out; end the process (MPI_Abort)");
}

void MpiProcessGroup::wait(MPI_Request& request, const char* call) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + timeout_;
    for (int polls = 0;; polls++) {
        int done = 0;
        check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), call);
        if (done) return;
        if (clock::now() >= deadline) {
            broken_ = call;
            (void)new std::vector<double>(std::move(scratch_));  // MPI may still write it: never freed
            BNF_CHECK(false, "ProcessGroup(mpi): " << call << " did not complete within " << timeout_.count()
                                                   << " ms: a peer died or stopped making the same calls; the group "
                                                   << "is unusable, end the process (MPI_Abort)");
        }
        // Spin first (a collective between live peers completes in microseconds), then poll gently.
        if (polls > 20000) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
}

// The collectives run on the group's own buffer: after a timeout MPI may
// still write it, so it is then abandoned, never freed (see wait).
void MpiProcessGroup::all_gather(const double* send, double* recv, size_t count) {
    check_usable("all_gather");
    BNF_CHECK(count <= kMaxMpiCount, "ProcessGroup(mpi)::all_gather: " << count << " values per rank is too many");
    scratch_.resize(count * (1 + static_cast<size_t>(size())));
    std::copy(send, send + count, scratch_.begin());
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallgather(scratch_.data(), static_cast<int>(count), MPI_DOUBLE, scratch_.data() + count,
                             static_cast<int>(count), MPI_DOUBLE, comm_, &request),
              "MPI_Iallgather");
    wait(request, "MPI_Iallgather");
    std::copy(scratch_.begin() + static_cast<std::ptrdiff_t>(count), scratch_.end(), recv);
}

void MpiProcessGroup::all_reduce_sum(double* data, size_t count) {
    check_usable("all_reduce_sum");
    for (size_t done = 0; done < count; done += kMaxMpiCount) {
        const size_t piece = std::min(count - done, kMaxMpiCount);
        scratch_.assign(data + done, data + done + piece);
        MPI_Request request = MPI_REQUEST_NULL;
        check_mpi(MPI_Iallreduce(MPI_IN_PLACE, scratch_.data(), static_cast<int>(piece), MPI_DOUBLE, MPI_SUM, comm_,
                                 &request),
                  "MPI_Iallreduce");
        wait(request, "MPI_Iallreduce");
        std::copy(scratch_.begin(), scratch_.end(), data + done);
    }
}

MpiProcessGroup& as_mpi(ProcessGroup& group, const char* what) {
    auto* mpi = dynamic_cast<MpiProcessGroup*>(&group);
    BNF_CHECK(mpi, what << ": expected an MPI process group, got backend \"" << group.backend() << "\"");
    return *mpi;
}

}  // namespace detail

ProcessGroup::~ProcessGroup() = default;

namespace {

void check_collective_tensor(const Tensor& t, const char* what) {
    BNF_CHECK(t.defined() && t.dtype() == DType::Float64 && t.is_contiguous(),
              "ProcessGroup::" << what << ": expected a dense float64 tensor");
}

Tensor on_host(const Tensor& t) { return t.device().is_cpu() ? t : t.to(Device::cpu()); }

}  // namespace

void ProcessGroup::all_gather(const Tensor& send, Tensor& recv) {
    check_collective_tensor(send, "all_gather");
    check_collective_tensor(recv, "all_gather");
    BNF_CHECK(recv.numel() == send.numel() * size() && recv.device() == send.device(),
              "ProcessGroup::all_gather: expected a receive tensor of " << send.numel() * size() << " values on "
                                                                        << send.device().str());
    const Tensor host_send = on_host(send);
    Tensor host_recv = recv.device().is_cpu() ? recv : Tensor::empty(recv.shape(), DType::Float64);
    all_gather(host_send.data<double>(), host_recv.data<double>(), static_cast<size_t>(send.numel()));
    if (!recv.device().is_cpu()) recv.copy_(host_recv);
}

void ProcessGroup::all_reduce_sum(Tensor& data) {
    check_collective_tensor(data, "all_reduce_sum");
    Tensor host = on_host(data);
    all_reduce_sum(host.data<double>(), static_cast<size_t>(data.numel()));
    if (!data.device().is_cpu()) data.copy_(host);
}

int ProcessGroup::split_position(const std::vector<int>& ranks) const {
    BNF_CHECK(!ranks.empty(), "ProcessGroup::split: the rank list is empty");
    int position = -1;
    for (size_t i = 0; i < ranks.size(); i++) {
        BNF_CHECK(ranks[i] >= 0 && ranks[i] < size_,
                  "ProcessGroup::split: rank " << ranks[i] << " is not in this group of size " << size_);
        for (size_t j = 0; j < i; j++) {
            BNF_CHECK(ranks[j] != ranks[i], "ProcessGroup::split: rank " << ranks[i] << " is listed twice");
        }
        if (ranks[i] == rank_) position = static_cast<int>(i);
    }
    return position;
}

std::shared_ptr<ProcessGroup> ProcessGroup::mpi(MPI_Comm comm) {
    if (comm == MPI_COMM_WORLD) return world();
    return mpi(comm, MpiOptions{});
}

std::shared_ptr<ProcessGroup> ProcessGroup::mpi(MPI_Comm comm, MpiOptions options) {
    detail::require_mpi_initialized("ProcessGroup::mpi");
    BNF_CHECK(comm != MPI_COMM_NULL, "ProcessGroup::mpi: comm is MPI_COMM_NULL");
    BNF_CHECK(options.timeout.count() > 0,
              "ProcessGroup::mpi: timeout is " << options.timeout.count() << " ms, expected > 0");
    return std::make_shared<detail::MpiProcessGroup>(detail::private_duplicate(comm), options.timeout);
}

std::shared_ptr<ProcessGroup> ProcessGroup::world() {
    static std::mutex mutex;
    static std::shared_ptr<ProcessGroup> world;
    std::lock_guard<std::mutex> lock(mutex);
    if (world) return world;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        int provided = 0;
        detail::check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
        // Groups still alive at exit see MPI_Finalized and skip MPI_Comm_free.
        std::atexit([] {
            int finalized = 0;
            MPI_Finalized(&finalized);
            if (!finalized) MPI_Finalize();
        });
    }
    detail::require_mpi_initialized("ProcessGroup::world");
    world = std::make_shared<detail::MpiProcessGroup>(detail::private_duplicate(MPI_COMM_WORLD), MpiOptions{}.timeout);
    return world;
}

std::shared_ptr<ProcessGroup> ProcessGroup::nccl(std::shared_ptr<ProcessGroup> bootstrap) {
    return nccl(std::move(bootstrap), NcclOptions{});
}

}  // namespace bnforge
