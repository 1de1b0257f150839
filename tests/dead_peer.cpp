// A SyncBatchNorm job in which the last rank dies mid-training (run by
// tests/dead_peer.sh under mpirun, tests named DeadPeer):
//   dead_peer kill <timeout ms>  the last rank SIGKILLs itself before its 3rd forward;
//   dead_peer exit <timeout ms>  it finalizes MPI and exits 0 instead, without the collective.
// The others block in the forward's collective until the group's timeout,
// then print the Error and end the job with MPI_Abort, as the README says to.
#include <bnforge/bnforge.h>
#include <bnforge/sync_batch_norm.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
    using namespace bnforge;
    if (argc != 3) {
        std::fprintf(stderr, "usage: dead_peer kill|exit <timeout ms>\n");
        return 2;
    }
    const std::string how = argv[1];
    MPI_Init(&argc, &argv);
    auto group = ProcessGroup::mpi(MPI_COMM_WORLD, {std::chrono::milliseconds(std::atoi(argv[2]))});
    const int rank = group->rank(), last = group->size() - 1;
    SyncBatchNorm bn(BatchNormOptions::pytorch(4), group);
    Tensor x = Tensor::empty({2 + rank, 4, 3, 3}, DType::Float32);
    for (int64_t i = 0; i < x.numel(); i++) x.data<float>()[i] = static_cast<float>((i * 7 + rank) % 13) - 6.0f;
    const auto start = std::chrono::steady_clock::now();
    for (int step = 0; step < 4; step++) {
        if (rank == last && step == 2) {
            std::printf("rank %d: leaving the job (%s) before step %d\n", rank, how.c_str(), step);
            std::fflush(stdout);
            if (how == "kill") std::raise(SIGKILL);
            MPI_Finalize();
            return 0;
        }
        try {
            bn.backward(bn.forward(x));
        } catch (const Error& e) {
            const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            std::printf("rank %d: Error at step %d after %.1f s: %s\n", rank, step, waited, e.what());
            std::fflush(stdout);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
    }
    std::printf("rank %d: all steps done (the peer's death went unnoticed)\n", rank);
    MPI_Finalize();
    return 0;
}
