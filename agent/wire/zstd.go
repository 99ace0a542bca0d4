package wire

// Both sides compress only what pays (a write stream's frames, a read
// stream's ranges): zstd's fastest level is tried on a sample of ZstdSample
// bytes first, and the bytes go compressed only if the sample, then the
// whole, Shrinks. Random or already compressed data cost that level 4.5 ms
// of CPU per MiB here for nothing (a repeating pattern 0.8 ms).
const ZstdSample = 64 << 10

// Shrinks says packed bytes of plain ones are worth sending: an eighth
// smaller or more.
func Shrinks(plain, packed int) bool { return packed < plain-plain/8 }
