"""The images a run learns from and the images it learns to reject.

``datasets`` (the named data sets, their splits and augmentation, ``imagefolder:PATH``), ``imagefiles`` (reading
a folder or archive of image files), ``outliers`` (outlier photos as training negatives), ``noise`` (the noise
families methods train on) and ``procedural`` (the generated images some of those families draw). This room
imports no other room of ``training``: everything else reads data, data reads nothing of theirs.
"""
