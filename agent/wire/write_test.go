package wire

import "testing"

// A frame header reads back as written, and one outside the bounds is
// refused (it comes from the network).
func TestWriteFrameHeader(t *testing.T) {
	f := WriteFrame{Offset: 1 << 40, Length: MaxWriteFrame, WireLength: 1234, Encoding: WriteZstd}
	got, err := ParseWriteFrame(f.Marshal())
	if err != nil || got != f {
		t.Fatalf("read back %+v (%v), want %+v", got, err, f)
	}
	for _, bad := range []WriteFrame{
		{Offset: -1, Length: 1, WireLength: 1},
		{Length: 0, WireLength: 0},
		{Length: MaxWriteFrame + 1, WireLength: MaxWriteFrame + 1},
		{Length: 10, WireLength: 9, Encoding: WriteRaw},
		{Length: 10, WireLength: 0, Encoding: WriteZstd},
		{Length: 10, WireLength: MaxWriteFrame + 1, Encoding: WriteZstd},
		{Length: 10, WireLength: 10, Encoding: 7},
	} {
		if _, err := ParseWriteFrame(bad.Marshal()); err == nil {
			t.Errorf("%+v was taken", bad)
		}
	}
	for _, p := range []string{"data/f", "/data/../etc/passwd", "/data//f", ""} {
		if (WriteRequest{Path: p}).Validate() == nil {
			t.Errorf("write path %q was taken", p)
		}
	}
}
