package mount

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// A read stream's body is the range cut at the file's size: what comes
// before it ends is an error (the stream broke), not the file's end.
func TestReadStreamBodyIsExact(t *testing.T) {
	whole := &exactly{r: strings.NewReader("0123456789"), left: 10}
	if b, err := io.ReadAll(whole); err != nil || string(b) != "0123456789" {
		t.Fatalf("whole body: %q %v", b, err)
	}
	cut := &exactly{r: strings.NewReader("0123456789"), left: 4}
	if b, err := io.ReadAll(cut); err != nil || string(b) != "0123" {
		t.Fatalf("body longer than the range: %q %v", b, err)
	}
	broken := &exactly{r: strings.NewReader("01234"), left: 10}
	if _, err := io.ReadAll(broken); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a body that ends early: %v, want io.ErrUnexpectedEOF", err)
	}
}
