package dev.vigia.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** A process's CPU time (user + system, all threads) from Linux's /proc/PID/stat. */
final class Cpu {
  /** Clock ticks per second of /proc's times (USER_HZ, 100 on Linux). */
  static final long CLK_TCK = 100;

  private Cpu() {}

  static long processTicks() {
    return ticks(ProcessHandle.current().pid());
  }

  /** utime + stime of `pid`, in clock ticks; -1 once the process is gone. */
  static long ticks(long pid) {
    String stat;
    try {
      stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
    } catch (IOException gone) {
      return -1;
    }
    // The command name (field 2) may hold blanks: count fields after its closing parenthesis.
    String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
    return Long.parseLong(f[11]) + Long.parseLong(f[12]);
  }
}
