#include "cpu_caches.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <unistd.h>

namespace bnforge::detail {

size_t sysfs_cache_bytes(const std::string& cache_dir, int level) {
    for (int index = 0;; index++) {
        const std::string dir = cache_dir + "/index" + std::to_string(index) + "/";
        std::ifstream level_file(dir + "level");
        if (!level_file) return 0;
        int cache_level = 0;
        std::string type;
        level_file >> cache_level;
        std::ifstream(dir + "type") >> type;
        if (cache_level != level || type == "Instruction") continue;
        size_t value = 0;
        char unit = '\0';
        std::ifstream(dir + "size") >> value >> unit;
        switch (unit) {
            case 'K': return value << 10;
            case 'M': return value << 20;
            case 'G': return value << 30;
            default: return value;
        }
    }
}

size_t cpu_cache_bytes(int level) {
    // One source for every level: sysfs when it lists any cache, else sysconf.
    static const std::array<size_t, 5> bytes = [] {
        std::array<size_t, 5> b{};
        bool listed = false;
        for (int l = 1; l <= 4; l++) {
            b[l] = sysfs_cache_bytes("/sys/devices/system/cpu/cpu0/cache", l);
            listed = listed || b[l] > 0;
        }
        if (listed) return b;
        const int names[] = {0, _SC_LEVEL1_DCACHE_SIZE, _SC_LEVEL2_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE,
                             _SC_LEVEL4_CACHE_SIZE};
        for (int l = 1; l <= 4; l++) b[l] = static_cast<size_t>(std::max(0L, sysconf(names[l])));
        return b;
    }();
    return level >= 1 && level <= 4 ? bytes[level] : 0;
}

size_t last_level_cache_bytes() {
    for (int level = 4; level >= 1; level--) {
        if (const size_t b = cpu_cache_bytes(level)) return b;
    }
    return 0;
}

}  // namespace bnforge::detail
