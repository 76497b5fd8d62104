package bridge

import (
	"runtime"
	"testing"

	"github.com/bridge-dev/bridge/pkg/simulate"
)

// allocated runs fn and returns how many bytes the whole process allocated
// meanwhile (bridge and both simulators: all of them stream).
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestLargeFilesStream: a 20 MB attachment goes from Chatwoot to Dify, and
// a 20 MB answer file from Dify to Chatwoot, without the process ever
// allocating anything near the file's size: the bytes stream through.
func TestLargeFilesStream(t *testing.T) {
	const size = 20 << 20
	e := newEnv(t, envOptions{})
	e.useApp(simulate.DifyApp{Mode: "chat", FileUpload: &simulate.DifyFileUpload{Types: []string{"video"}},
		Respond: func(c simulate.DifyCall) simulate.DifyResponse {
			r := simulate.DifyResponse{Text: "Here is the full recording."}
			if len(c.Files) == 0 {
				r.Files = []simulate.DifyOutFile{{Type: "video", Name: "recording.mp4", ContentType: "video/mp4", Size: size}}
			}
			return r
		}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")

	in := allocated(func() {
		id := e.sends(conv, "my video", simulate.Attachment{FileType: "video", Name: "clip.mp4", ContentType: "video/mp4", Size: size}).EventID
		e.answered(id)
	})
	if ups := e.dify.Uploads(); len(ups) != 1 || ups[0].Size != size {
		t.Fatalf("uploads %+v", ups)
	}
	out := allocated(func() {
		e.answered(e.say(conv, "send me the recording").EventID)
	})
	var got int64
	for _, m := range e.cw.Messages(conv) {
		for _, a := range m.Attachments {
			if m.SenderType == "agent_bot" {
				got = a.Size
			}
		}
	}
	if got != size {
		t.Fatalf("the answer's file reached chatwoot with %d bytes", got)
	}
	t.Logf("allocated while moving 20 MB: in %.1f MB, out %.1f MB", float64(in)/(1<<20), float64(out)/(1<<20))
	for what, n := range map[string]uint64{"chatwoot to dify": in, "dify to chatwoot": out} {
		if n > size/4 {
			t.Errorf("%s: %d bytes allocated for a %d byte file: it is not streamed", what, n, size)
		}
	}
}
