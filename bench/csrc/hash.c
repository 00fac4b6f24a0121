/* DPDK's side of `cargo xtask bench hash`: rte_hash driven with precomputed hashes (the
 * *_with_hash calls), in the shape of DPDK's hash_perf_autotest. Our own code calling DPDK's
 * public API; every symbol starts with `hash_`. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>

static char hash_runtime_dir[PATH_MAX];

/* Initialise the EAL once, no PCI, nothing shared on disk. With `huge_dir` (a hugetlbfs mount
 * of 2 MiB pages), DPDK's `mem_mb` MiB come from there, as ours come from the same mount; NULL:
 * no hugepages (heap memory, like our LocalZones). 0 on success. */
int hash_dpdk_eal_init(const char *huge_dir, unsigned mem_mb)
{
	char dir_arg[PATH_MAX + 16], mem_arg[16];
	/* The memory arguments, the only ones that differ. */
	char *huge_mem[] = {dir_arg, "-m", mem_arg, "--in-memory"};
	char *heap_mem[] = {"--no-huge", "-m", "1536", "--no-shconf"};
	char *argv[] = {"hash-bench", "-l", "0", NULL, NULL, NULL, NULL, "--no-pci",
			"--file-prefix=hugeshare-hash-bench", "--no-telemetry",
			"--log-level=lib.eal:error", NULL};
	int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1;
	if (huge_dir) {
		snprintf(dir_arg, sizeof(dir_arg), "--huge-dir=%s", huge_dir);
		snprintf(mem_arg, sizeof(mem_arg), "%u", mem_mb);
	}
	memcpy(&argv[3], huge_dir ? huge_mem : heap_mem, sizeof(huge_mem));
	if (rte_eal_init(argc, argv) < 0)
		return -1;
	snprintf(hash_runtime_dir, sizeof(hash_runtime_dir), "%s", rte_eal_get_runtime_dir());
	return 0;
}

/* Undo hash_dpdk_eal_init and remove the (empty) runtime directory. */
void hash_dpdk_eal_cleanup(void)
{
	rte_eal_cleanup();
	rmdir(hash_runtime_dir);
}

/* Create a table of `entries` keys of `key_len` bytes; `lf` selects lock-free readers
 * (RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF). NULL on failure. */
void *hash_dpdk_create(const char *name, uint32_t entries, uint32_t key_len, int lf)
{
	struct rte_hash_parameters p;
	memset(&p, 0, sizeof(p));
	p.name = name;
	p.entries = entries;
	p.key_len = key_len;
	p.hash_func = rte_hash_crc;
	p.hash_func_init_val = 0;
	p.socket_id = 0;
	p.extra_flag = lf ? RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF : 0;
	return rte_hash_create(&p);
}

void hash_dpdk_free(void *h)
{
	rte_hash_free((struct rte_hash *)h);
}

void hash_dpdk_reset(void *h)
{
	rte_hash_reset((struct rte_hash *)h);
}

/* The four timed phases, each returning TSC cycles per operation and adding the operations
 * that did not succeed to *fails. Keys are `key_len` bytes each, packed; `sigs` their hashes. */

/* Add `n` keys. */
double hash_dpdk_add(void *hv, uint32_t key_len, const uint8_t *keys, const uint32_t *sigs,
		     uint32_t n, uint64_t *fails)
{
	struct rte_hash *h = hv;
	uint64_t bad = 0;
	uint64_t t0 = rte_rdtsc_precise();
	for (uint32_t i = 0; i < n; i++)
		bad += rte_hash_add_key_with_hash(h, keys + (size_t)i * key_len, sigs[i]) < 0;
	uint64_t t1 = rte_rdtsc_precise();
	*fails += bad;
	return (double)(t1 - t0) / n;
}

/* Look `n` keys up one by one. */
double hash_dpdk_lookup(void *hv, uint32_t key_len, const uint8_t *keys, const uint32_t *sigs,
			uint32_t n, uint64_t *fails)
{
	struct rte_hash *h = hv;
	uint64_t bad = 0;
	uint64_t t0 = rte_rdtsc_precise();
	for (uint32_t i = 0; i < n; i++)
		bad += rte_hash_lookup_with_hash(h, keys + (size_t)i * key_len, sigs[i]) < 0;
	uint64_t t1 = rte_rdtsc_precise();
	*fails += bad;
	return (double)(t1 - t0) / n;
}

/* Look `n` keys (n a multiple of 16; `ptrs[i]` points to key i) up in bursts of 16; cycles per
 * key. */
double hash_dpdk_bulk(void *hv, const void **ptrs, const uint32_t *sigs, uint32_t n,
		      uint64_t *fails)
{
	struct rte_hash *h = hv;
	uint64_t bad = 0;
	int32_t positions[16];
	uint64_t t0 = rte_rdtsc_precise();
	for (uint32_t i = 0; i + 16 <= n; i += 16) {
		rte_hash_lookup_with_hash_bulk(h, ptrs + i, (hash_sig_t *)(sigs + i), 16, positions);
		for (int j = 0; j < 16; j++)
			bad += positions[j] < 0;
	}
	uint64_t t1 = rte_rdtsc_precise();
	*fails += bad;
	return (double)(t1 - t0) / (n / 16 * 16);
}

/* Delete `n` keys. With `free_pos` (the lock-free mode), each deleted key's slot is also freed
 * with rte_hash_free_key_with_position: in that mode rte_hash_del_key_with_hash leaves the slot
 * allocated (no_free_on_del) until the user frees it once readers are done with it, while ours
 * makes the slot reusable in the delete itself. So a delete is the same work on both sides: the
 * key is gone and its slot can take the next add. */
double hash_dpdk_del(void *hv, uint32_t key_len, const uint8_t *keys, const uint32_t *sigs,
		     uint32_t n, int free_pos, uint64_t *fails)
{
	struct rte_hash *h = hv;
	uint64_t bad = 0;
	uint64_t t0 = rte_rdtsc_precise();
	for (uint32_t i = 0; i < n; i++) {
		int32_t pos = rte_hash_del_key_with_hash(h, keys + (size_t)i * key_len, sigs[i]);
		if (pos < 0)
			bad++;
		else if (free_pos)
			bad += rte_hash_free_key_with_position(h, pos) != 0;
	}
	uint64_t t1 = rte_rdtsc_precise();
	*fails += bad;
	return (double)(t1 - t0) / n;
}
