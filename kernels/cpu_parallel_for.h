// ParallelFor: runs task(0 .. count-1) on XLA's CPU thread pool (the FFI ThreadPool
// context) and the calling thread; shared by the project's compiled CPU kernels.

#ifndef MAMKPD_KERNELS_CPU_PARALLEL_FOR_H_
#define MAMKPD_KERNELS_CPU_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace mamkpd {

// Runs task(0 .. count-1) on the pool's threads and this one; returns when all are done.
template <typename Task>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t count, Task task) {
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto progress = std::make_shared<Progress>();
  auto worker = [progress, count, task]() {
    int64_t finished = 0;
    for (int64_t t; (t = progress->next.fetch_add(1)) < count; ++finished) task(t);
    if (finished > 0 && progress->done.fetch_add(finished) + finished == count) {
      std::lock_guard<std::mutex> lock(progress->mutex);
      progress->all_done.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  for (int64_t i = 0; i < helpers; ++i) {  // a helper that starts late finds no task left
    auto copy = worker;
    pool.Schedule(std::move(copy));
  }
  worker();
  std::unique_lock<std::mutex> lock(progress->mutex);
  progress->all_done.wait(lock, [&] { return progress->done.load() == count; });
}

}  // namespace mamkpd

#endif  // MAMKPD_KERNELS_CPU_PARALLEL_FOR_H_
