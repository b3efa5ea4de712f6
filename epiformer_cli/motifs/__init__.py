"""Motifs: which transcription factors' sites the model's contributions point at.

* :mod:`.database`: motif databases (MEME files, JASPAR CORE vertebrates as pyjaspar ships it);
* :mod:`.scan`: log-odds scans of motifs over short sequences (the motif a variant sits in);
* :mod:`.patterns`: the patterns TF-MoDISco finds, and their database matches;
* :mod:`.contributions`: explain folders read as TF-MoDISco's inputs;
* :mod:`.discover`: TF-MoDISco (modisco-lite) per track; :mod:`.match`: TOMTOM (memelite);
* :mod:`.report`: report.html.
"""


def use_numba_cache(folder=None) -> None:
    """Choose where modisco-lite's and memelite's numba kernels are cached, unless the user set
    ``NUMBA_CACHE_DIR``: ``folder``, else epiformer's own cache folder (``$EPIFORMER_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/epiformer``, else ``~/.cache/epiformer``) + ``/numba``.

    They compile on first use (about a minute) and by default cache beside their own source, inside
    site-packages, which may be read-only or shared. numba reads the setting when it is first
    imported, so this is called before (``motifs`` calls it as it starts; the demo first, with a
    folder of its own, so that it writes nothing outside its output folder); later it does nothing.
    """
    import os
    import sys

    if "NUMBA_CACHE_DIR" in os.environ or "numba" in sys.modules:
        return
    if folder is None:
        from epiformer_cli.io.identity import cache_dir

        folder = cache_dir() / "numba"
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
