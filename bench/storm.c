/*
 * A write-protect fault storm on a DAX file.
 *
 *   storm FILE PAGES ROUNDS
 *
 * Maps FILE (created/extended to PAGES pages) MAP_SHARED, writes every page
 * once (first-touch faults, not counted), then ROUNDS times:
 *   msync(MS_SYNC)     - writes back and re-write-protects every page
 *   write every page   - PAGES write-protect faults (->pfn_mkwrite on DAX)
 * so ROUNDS * PAGES write-protect faults, as fast as the kernel allows.
 *
 * Prints one line of key=value: the whole loop's rate (msync included) and
 * the write passes' rate alone (the faults without the writeback cost).
 * Keep PAGES * 4 KiB under 2 MiB so the file is mapped with PTEs, not PMDs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s FILE PAGES ROUNDS\n", argv[0]);
		return 2;
	}
	long pages = atol(argv[2]), rounds = atol(argv[3]);
	long page = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)pages * page;
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, len) != 0) {
		perror(argv[1]);
		return 1;
	}
	/* Allocate blocks up front: no holes, so faults are not allocations. */
	if (fallocate(fd, 0, 0, len) != 0) {
		perror("fallocate");
		return 1;
	}
	volatile char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (long i = 0; i < pages; i++)
		m[i * page] = 1;

	double write_s = 0, sync_s = 0, t0 = now();
	for (long r = 0; r < rounds; r++) {
		double a = now();
		if (msync((void *)m, len, MS_SYNC) != 0) {
			perror("msync");
			return 1;
		}
		double b = now();
		for (long i = 0; i < pages; i++)
			m[i * page] = (char)r;
		double c = now();
		sync_s += b - a;
		write_s += c - b;
	}
	double total = now() - t0;
	long faults = pages * rounds;
	printf("faults=%ld seconds=%.6f faults_per_s=%.0f write_seconds=%.6f "
	       "write_faults_per_s=%.0f msync_seconds=%.6f\n",
	       faults, total, faults / total, write_s, faults / write_s, sync_s);
	munmap((void *)m, len);
	close(fd);
	return 0;
}
