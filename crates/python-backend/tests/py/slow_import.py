import sys
import time

sys.stderr.write("importing slowly\n")
sys.stderr.flush()
time.sleep(30)
