// Everything distributed: process groups (MPI, NCCL) and SyncBatchNorm.
// Link bnforge::distributed (it brings MPI).
#pragma once
#include <bnforge/bnforge.h>
#include <bnforge/process_group.h>
#include <bnforge/sync_batch_norm.h>
