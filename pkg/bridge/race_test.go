//go:build race

package bridge

// raceEnabled: the race detector is on; memory measurements mean little.
const raceEnabled = true
