#include "cpu_caches.h"

#include <algorithm>
#include <fstream>
#include <unistd.h>

namespace bnforge::detail {

std::array<size_t, 5> sysfs_cache_sizes(const std::string& cache_dir) {
    std::array<size_t, 5> sizes{};
    for (int index = 0;; index++) {
        const std::string dir = cache_dir + "/index" + std::to_string(index) + "/";
        std::ifstream level_file(dir + "level");
        if (!level_file) return sizes;
        int level = 0;
        std::string type;
        level_file >> level;
        std::ifstream(dir + "type") >> type;
        if (level < 1 || level > 4 || type == "Instruction" || sizes[level] != 0) continue;
        size_t value = 0;
        char unit = '\0';
        std::ifstream(dir + "size") >> value >> unit;
        switch (unit) {
            case 'K': value <<= 10; break;
            case 'M': value <<= 20; break;
            case 'G': value <<= 30; break;
            default: break;
        }
        sizes[level] = value;
    }
}

size_t cpu_cache_bytes(int level) {
    // One source for every level: sysfs when it lists any cache, else sysconf.
    static const std::array<size_t, 5> bytes = [] {
        std::array<size_t, 5> b = sysfs_cache_sizes("/sys/devices/system/cpu/cpu0/cache");
        if (b[1] || b[2] || b[3] || b[4]) return b;
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

size_t last_level_cache_fraction(size_t divisor) {
    const size_t llc = last_level_cache_bytes();
    return (llc > 0 ? llc : size_t{32} << 20) / divisor;
}

}  // namespace bnforge::detail
