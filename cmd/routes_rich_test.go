package cmd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/simulate"
)

// TestRoutesAddRichOptions: routes add stores --transfer, --format and
// --voice-fallback, refuses bad values, and says which files the app
// takes and whether it hears voice notes.
func TestRoutesAddRichOptions(t *testing.T) {
	w := newWorld(t, simulate.DifyApp{Key: testDifyKey, Name: "Photos", Mode: simulate.ModeChat, SpeechToText: true,
		FileUpload: &simulate.DifyFileUpload{Types: []string{"image", "document"}}})
	res := w.mustRun(0, "routes", "add", "--inbox", "1", "--dify-key", testDifyKey, "--transfer", "upload",
		"--format", "whatsapp", "--voice-fallback", "handoff")
	if !strings.Contains(res.Out, "The app takes files: image, document; speech to text: on (it refuses WhatsApp's audio/ogg voice notes: 415).") {
		t.Errorf("routes add said:\n%s", res.Out)
	}
	res = w.mustRunJSON(0, "routes", "show", "1")
	var v routeView
	if err := json.Unmarshal([]byte(res.Out), &v); err != nil || v.Transfer != "upload" || v.Format != "whatsapp" || v.VoiceFallback != "handoff" {
		t.Errorf("routes show: %v %+v", err, v)
	}
	if res = w.mustRun(0, "routes", "show", "1"); !strings.Contains(res.Out, "format:     whatsapp") {
		t.Errorf("routes show:\n%s", res.Out)
	}
	for _, bad := range [][]string{{"--transfer", "ftp"}, {"--format", "html"}, {"--voice-fallback", "ignore"}} {
		res = w.mustRun(2, append([]string{"routes", "add", "--inbox", "2", "--dify-key", testDifyKey, "--no-verify"}, bad...)...)
		if !strings.Contains(res.Err, "bad "+bad[0]) {
			t.Errorf("%v: %s", bad, res.Err)
		}
	}
}
