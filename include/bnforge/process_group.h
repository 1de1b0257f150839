// Process groups: the ranks SyncBatchNorm synchronises its statistics over,
// and the two collectives it needs. MPI carries CPU statistics and bootstraps
// NCCL; NCCL carries them between GPUs.
//
// Every member of a group must make the same collective calls in the same
// order, like MPI's own collectives: creating a group (mpi(), nccl(), split())
// is itself a collective over the parent.
#pragma once
// MPI's C API only: the deprecated C++ bindings warn under -Wextra and are unused.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <bnforge/tensor.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace bnforge {

class ProcessGroup {
public:
    virtual ~ProcessGroup();
    ProcessGroup(const ProcessGroup&) = delete;
    ProcessGroup& operator=(const ProcessGroup&) = delete;

    struct MpiOptions {
        // A collective that has not completed by then throws bnforge::Error (a
        // peer died, or stopped making the same calls) instead of hanging. The
        // group is unusable afterwards (MPI cannot cancel a collective): report
        // the error and end the process, with MPI_Abort rather than
        // MPI_Finalize, which could wait for the collective forever.
        std::chrono::milliseconds timeout{std::chrono::minutes(5)};
    };
    // The ranks of `comm`, over a private duplicate of it (so bnforge's
    // messages never meet the application's). Collective over `comm`.
    // MPI must be initialised (MPI_Init), except for the default WORLD
    // (which, with default options, is world()).
    static std::shared_ptr<ProcessGroup> mpi(MPI_Comm comm = MPI_COMM_WORLD);
    static std::shared_ptr<ProcessGroup> mpi(MPI_Comm comm, MpiOptions options);

    // Every process of the job (MPI_COMM_WORLD), shared by all callers.
    // Initialises MPI (MPI_THREAD_FUNNELED) if the application has not, and
    // then finalises it at exit.
    static std::shared_ptr<ProcessGroup> world();

    struct NcclOptions {
        int device = -1;  // CUDA device of this rank; -1: the current one
        // A collective that has not completed by then aborts the communicator
        // and throws bnforge::Error (a dead or diverged peer), instead of hanging.
        std::chrono::milliseconds timeout{std::chrono::minutes(5)};
    };
    // One NCCL communicator over the ranks of `bootstrap` (an MPI group: rank 0's
    // unique id is broadcast over it). Throws when bnforge was built without NCCL
    // (see nccl_available()). Collective over `bootstrap`.
    static std::shared_ptr<ProcessGroup> nccl(std::shared_ptr<ProcessGroup> bootstrap, NcclOptions options);
    static std::shared_ptr<ProcessGroup> nccl(std::shared_ptr<ProcessGroup> bootstrap);
    static bool nccl_available();  // built with NCCL

    int rank() const { return rank_; }
    int size() const { return size_; }
    virtual std::string backend() const = 0;  // "mpi" or "nccl"

    // A sub-group of this group's `ranks` (ranks of this group, distinct; the
    // sub-group's rank i is ranks[i]), on the same backend. Collective over
    // this group: every member calls it with the same list. Members not in
    // `ranks` get nullptr.
    virtual std::shared_ptr<ProcessGroup> split(const std::vector<int>& ranks) = 0;

    // Collectives on host memory (the small handshakes); the backend moves the
    // data where it must. all_gather: recv[r * count + i] = rank r's send[i].
    virtual void all_gather(const double* send, double* recv, size_t count) = 0;
    // data[i] = Σ over ranks of data[i].
    virtual void all_reduce_sum(double* data, size_t count) = 0;

    // Collectives on dense float64 tensors, read where they live: NCCL works on
    // CUDA tensors in place, ordered after the kernels on bnforge's CUDA
    // stream and before the next ones, with no host synchronisation; MPI (and
    // anything else) goes through host memory.
    // all_gather: recv, shaped (size(), send's shape...), = every rank's send in rank order.
    virtual void all_gather(const Tensor& send, Tensor& recv);
    // data = Σ over ranks of data, in place.
    virtual void all_reduce_sum(Tensor& data);

protected:
    ProcessGroup(int rank, int size) : rank_(rank), size_(size) {}
    // Checks a split's rank list against this group; returns this rank's index
    // in it, or -1 when it is not a member.
    int split_position(const std::vector<int>& ranks) const;

private:
    int rank_, size_;
};

}  // namespace bnforge
