// Package grow makes the cell's data partition (partition 4, /perm) fill the
// disk it was written to: it moves the GPT's backup to the disk's real end,
// extends partition 4 to the last whole MiB before it, and makes a new ext4
// over all of it. The image is built small (the image builder's perm is a few
// hundred MiB) and flashed to cards of any size; the cell's init runs Perm at
// every boot, before gokrazy mounts /perm, and cellctl flash runs the same code
// right after writing a card, so that a card it flashed is full size at once.
//
// # "Holds nothing", strictly
//
// A data partition is grown and formatted only when it holds nothing, which
// is one of:
//
//   - an ext4 that has never been mounted read-write (its superblock's mount
//     count is 0; Linux counts every read-write mount there, so nothing can
//     have been stored by a running cell), whose journal needs no recovery,
//     with no inode in use past the reserved ones and lost+found, and whose
//     root directory lists nothing but an empty lost+found (read with
//     go-diskfs's ext4 reader): what the image builder (or a format here)
//     makes;
//   - our own format cut short: the partition starts with the marker Format
//     writes before it begins (see Format);
//   - nothing at all: its first MiB is all zeros, and there is no ext4 backup
//     superblock in block group 1 for any block size (a file system whose
//     first superblock alone was wiped still has its data, and is left alone).
//
// Anything else is data: a perm mounted even once, a single file or
// directory, a journal to replay, an unknown file system, an unreadable root.
// Then nothing is written, not the partition table either, and the reason is
// logged. A cell that booted once before this code existed keeps its size.
//
// # The partition table
//
// The GPT is rewritten here (gpt.go), not with go-diskfs: only partition 4's
// last sector changes, plus the headers' last usable sector, backup location,
// and CRCs, and the protective MBR's size; everything else (GUIDs, names, the
// other entries) is kept byte for byte. The backup table goes to the disk's end
// first and the primary second, so a power cut leaves one consistent table
// either way. The kernel keeps its own copy of the table: with the root mounted
// from the same disk it cannot re-read it (BLKRRPART fails with EBUSY), so the
// init tells it partition 4's new size with BLKPG_RESIZE_PARTITION.
//
// # The file system
//
// go-diskfs's ext4 writer (already the image builder's) makes it; gokrazy's
// own mkfs program is not published, and an e2fsprogs binary on the image is
// avoided. It gets mke2fs's default of one inode per 16 KiB (go-diskfs's own
// is one per 8 KiB). go-diskfs writes every inode table as zeros (1/64 of the
// disk) and the journal (128 MiB) likewise: about 192 MiB for a 4 GiB disk,
// 640 MiB for 32 GiB, if written. Format sends each long run of zeros to
// Disk.ZeroRange instead: a hole punched in an image file, BLKZEROOUT on a
// block device (the device's own zeroing command where it has one: virtio,
// NVMe, most SSDs; where not, as behind most SD card readers, the kernel
// writes zero pages, so a first boot on such a card writes that much once).
// Measured on this machine's disk image files: 0.2 s for 4 GiB and 1.7 s for
// 32 GiB, with about 2 MiB actually written; e2fsck -f finds nothing to fix.
//
// Format's order makes a power cut safe: the partition's first 4 KiB (the
// primary superblock) is replaced by a marker and synced; go-diskfs writes
// everything else; then the superblock replaces the marker. A cut before the
// end leaves the marker, so the next boot formats again; never an old
// superblock over new metadata.
package grow
