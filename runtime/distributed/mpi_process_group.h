// The MPI process group, visible to the other backends: NCCL bootstraps over it.
#pragma once
#include <bnforge/process_group.h>

#include <chrono>
#include <string>
#include <vector>

namespace bnforge::detail {

class MpiProcessGroup final : public ProcessGroup {
public:
    // Takes ownership of `comm` (a communicator bnforge created: freed with it).
    MpiProcessGroup(MPI_Comm comm, std::chrono::milliseconds timeout);
    ~MpiProcessGroup() override;

    std::string backend() const override { return "mpi"; }
    std::shared_ptr<ProcessGroup> split(const std::vector<int>& ranks) override;
    void all_gather(const double* send, double* recv, size_t count) override;
    void all_reduce_sum(double* data, size_t count) override;

    MPI_Comm comm() const { return comm_; }
    // The MPI sub-communicator of `ranks` (MPI_COMM_NULL for non-members),
    // with bnforge's error handler. Collective over this group.
    MPI_Comm split_comm(const std::vector<int>& ranks) const;

private:
    // Completes a nonblocking collective on the group's own buffers, or
    // throws when the timeout passes (the group is broken from then on).
    void wait(MPI_Request& request, const char* call);
    void check_usable(const char* call) const;

    MPI_Comm comm_;
    std::chrono::milliseconds timeout_;
    std::string broken_;           // the collective that timed out, once one has
    std::vector<double> scratch_;  // the collectives' buffer (see all_gather)
};

// Throws bnforge::Error naming `call` and MPI's message unless rc == MPI_SUCCESS.
void check_mpi(int rc, const char* call);

// The group as an MPI group, or an Error naming `what` (NCCL bootstraps need one).
MpiProcessGroup& as_mpi(ProcessGroup& group, const char* what);

}  // namespace bnforge::detail
