"""The VM lab: a Debian guest under QEMU with its own stock kernel and Docker engine.

- :mod:`.guest`: the guest's disk, made once from Debian's packages and cached;
- :mod:`.machine`: booting it (KVM when it works, else TCG), running commands in it through
  its agent, copying files and images in, stopping it;
- :mod:`.proof`: ``vm check``, the kernel IPsec path proven end to end inside it.
"""
