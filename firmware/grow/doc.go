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
// avoided. go-diskfs writes every inode table as zeros (256 bytes per 16 KiB
// of disk) and the journal's blocks: about 256 MiB for a 4 GiB disk and 1.1
// GiB for 32 GiB. Format sends each long run of zeros to Disk.ZeroRange
// instead: a hole punched in an image file, BLKZEROOUT on a block device (the
// device's own zeroing command where it has one, e.g. virtio and most SSDs;
// the kernel writes zero pages where not, as on most SD card readers, so a
// first boot on an SD card costs about that much writing once).
//
// Format's order makes a power cut safe: the partition's first 4 KiB (the
// primary superblock) is replaced by a marker and synced; go-diskfs writes
// everything else; then the superblock replaces the marker. A cut before the
// end leaves the marker, so the next boot formats again; never an old
// superblock over new metadata.
package grow
